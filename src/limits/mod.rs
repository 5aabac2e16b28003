//! What one caller, or a crowd, may make the server hold: calls at once, the time a request
//! may take to arrive, and connections per peer address.

pub mod connections;
pub mod overload;

pub use connections::cap_per_peer;
pub use overload::OverloadLayer;
