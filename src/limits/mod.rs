//! What one caller, or a crowd, may make the server hold or do: calls at once, the time a
//! request may take to arrive, connections per peer address, and calls per client address and
//! per user over time.

pub mod client;
pub mod connections;
pub mod overload;
pub mod rate;

pub use client::{ClientAddress, TrustedProxies};
pub use connections::cap_per_peer;
pub use overload::OverloadLayer;
pub use rate::{RateLimitLayer, RateSettings};
