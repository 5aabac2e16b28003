//! Authentication and authorization: passwords, access tokens, the principal a call runs as,
//! the per-method access policy, and the tower layer that enforces it for every call.

pub mod authenticator;
pub mod layer;
pub mod password;
pub mod policy;
pub mod principal;
pub mod token;

pub use authenticator::Authenticator;
pub use principal::{Permission, Principal, Role};
