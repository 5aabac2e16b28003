//! What every tower layer of tally needs (a leaf).

/// The inner service to serve this call with: the one `poll_ready` drove to readiness. A fresh
/// clone takes its place for the next call, because a clone need not be ready (tower's
/// contract), so serving with a new clone could skip the readiness that `poll_ready` reported.
pub fn take_ready<S: Clone>(inner: &mut S) -> S {
    let clone = inner.clone();
    std::mem::replace(inner, clone)
}
