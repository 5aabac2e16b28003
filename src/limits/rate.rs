//! Rate limits: how often one client address, or one signed-in user, may call.
//!
//! Every tally method has a budget ([`METHOD_BUDGETS`], complete by a test over the descriptor
//! set):
//! - [`Budget::Auth`]: the calls that hash a password or send mail (`CreateUser`, `Login`,
//!   `RefreshSession`, `VerifyEmail`, `ResendVerification`), counted per client address,
//!   `TALLY_RATE_AUTH_PER_MINUTE`;
//! - [`Budget::Write`]: calls that change something, counted per signed-in user and per client
//!   address, each `TALLY_RATE_WRITES_PER_SECOND`;
//! - [`Budget::Read`]: not rate limited (the server's slots bound them).
//!
//! A call over a budget answers `RESOURCE_EXHAUSTED`, reason `RATE_LIMITED`, with a
//! `google.rpc.RetryInfo` of when it would pass (HTTP 429 with `Retry-After` through the
//! gateway). Limits are GCRA (governor): a budget of N per period allows a burst of N, then
//! one every period / N. They are per process: with several replicas a client gets each
//! replica's budget.
//!
//! The layer sits inside the authentication layer (it needs the principal) and resolves the
//! client address once ([`super::client`]), storing it for the handlers.

use std::{
    net::IpAddr,
    num::NonZeroU32,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures_util::future::BoxFuture;
use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock as _, DefaultClock},
};
use http::{Request, Response, header::CONTENT_TYPE};
use tower::{Layer, Service};
use uuid::Uuid;

use super::client::{self, ClientAddress, TrustedProxies};
use crate::{
    auth::Principal,
    error::{Error, grpc_rejection},
};

/// How often idle keys are dropped from the limiters' state.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// Which budget a method spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    Auth,
    Write,
    Read,
}

use Budget::*;

/// Every tally RPC and its budget, by gRPC path.
pub const METHOD_BUDGETS: &[(&str, Budget)] = &[
    ("/tally.v1.UserService/CreateUser", Auth),
    ("/tally.v1.UserService/GetUser", Read),
    ("/tally.v1.UserService/UpdateUser", Write),
    ("/tally.v1.UserService/VerifyEmail", Auth),
    ("/tally.v1.UserService/ResendVerification", Auth),
    ("/tally.v1.SessionService/Login", Auth),
    ("/tally.v1.SessionService/RefreshSession", Auth),
    ("/tally.v1.SessionService/ListSessions", Read),
    ("/tally.v1.SessionService/RevokeSession", Write),
    ("/tally.v1.RoleService/ListRoles", Read),
    ("/tally.v1.RoleService/GrantRole", Write),
    ("/tally.v1.RoleService/RevokeRole", Write),
    ("/tally.v1.AccountService/CreateAccount", Write),
    ("/tally.v1.AccountService/GetAccount", Read),
    ("/tally.v1.AccountService/ListAccounts", Read),
    ("/tally.v1.AccountService/ListEntries", Read),
    ("/tally.v1.AccountService/UpdateAccount", Write),
    ("/tally.v1.AccountService/CloseAccount", Write),
    ("/tally.v1.AccountService/GetAccountBalance", Read),
    ("/tally.v1.AccountService/Deposit", Write),
    ("/tally.v1.AccountService/Withdraw", Write),
    ("/tally.v1.TransferService/CreateTransfer", Write),
    ("/tally.v1.TransferService/CreateTransfers", Write),
    ("/tally.v1.TransferService/PostTransfer", Write),
    ("/tally.v1.TransferService/VoidTransfer", Write),
    ("/tally.v1.TransferService/ReverseTransfer", Write),
    ("/tally.v1.TransferService/GetTransfer", Read),
    ("/tally.v1.TransferService/ListTransfers", Read),
    ("/tally.v1.AuditService/ListAuditEvents", Read),
    ("/tally.v1.ExchangeService/SetRate", Write),
    ("/tally.v1.ExchangeService/ListRates", Read),
    ("/tally.v1.ExchangeService/WatchRates", Read),
    ("/tally.v1.EventService/WatchAccount", Read),
    ("/tally.v1.EventService/CreateBalanceMonitor", Write),
    ("/tally.v1.EventService/ListBalanceMonitors", Read),
    ("/tally.v1.EventService/DeleteBalanceMonitor", Write),
    ("/tally.v1.WebhookService/CreateWebhook", Write),
    ("/tally.v1.WebhookService/ListWebhooks", Read),
    ("/tally.v1.WebhookService/DeleteWebhook", Write),
    // Each quote writes a row.
    ("/tally.v1.ExchangeService/CreateQuote", Write),
    ("/tally.v1.ExchangeService/Convert", Write),
    ("/tally.v1.ExchangeService/ListLiquidityAccounts", Read),
];

fn budget_of(path: &str) -> Budget {
    METHOD_BUDGETS
        .iter()
        .find(|(p, _)| *p == path)
        .map_or(Read, |(_, budget)| *budget)
}

/// The budgets, validated (`TALLY_RATE_*`, `TALLY_TRUSTED_PROXIES`).
#[derive(Debug, Clone)]
pub struct RateSettings {
    pub auth_per_minute: NonZeroU32,
    pub writes_per_second: NonZeroU32,
    pub trusted_proxies: TrustedProxies,
}

struct Limiters {
    auth_per_address: DefaultKeyedRateLimiter<IpAddr>,
    writes_per_user: DefaultKeyedRateLimiter<Uuid>,
    writes_per_address: DefaultKeyedRateLimiter<IpAddr>,
    proxies: TrustedProxies,
    clock: DefaultClock,
}

impl Limiters {
    /// `Err(wait)` when `budget` is spent for this caller.
    fn check(
        &self,
        budget: Budget,
        address: Option<IpAddr>,
        user: Option<Uuid>,
    ) -> Result<(), (Budget, Duration)> {
        let now = self.clock.now();
        let spent = |wait: governor::NotUntil<_>| (budget, wait.wait_time_from(now));
        match budget {
            Read => Ok(()),
            Auth => match address {
                Some(address) => self.auth_per_address.check_key(&address).map_err(spent),
                None => Ok(()),
            },
            Write => {
                if let Some(user) = user {
                    self.writes_per_user.check_key(&user).map_err(spent)?;
                }
                match address {
                    Some(address) => self.writes_per_address.check_key(&address).map_err(spent),
                    None => Ok(()),
                }
            }
        }
    }

    fn prune(&self) {
        self.auth_per_address.retain_recent();
        self.writes_per_user.retain_recent();
        self.writes_per_address.retain_recent();
        self.auth_per_address.shrink_to_fit();
        self.writes_per_user.shrink_to_fit();
        self.writes_per_address.shrink_to_fit();
    }
}

#[derive(Clone)]
pub struct RateLimitLayer {
    limiters: Arc<Limiters>,
}

impl RateLimitLayer {
    /// The limiters, and a task on the current runtime that prunes their idle keys until the
    /// layer and every service made from it are gone.
    pub fn new(settings: &RateSettings) -> Self {
        let limiters = Arc::new(Limiters {
            auth_per_address: RateLimiter::keyed(Quota::per_minute(settings.auth_per_minute)),
            writes_per_user: RateLimiter::keyed(Quota::per_second(settings.writes_per_second)),
            writes_per_address: RateLimiter::keyed(Quota::per_second(settings.writes_per_second)),
            proxies: settings.trusted_proxies.clone(),
            clock: DefaultClock::default(),
        });
        let weak = Arc::downgrade(&limiters);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(PRUNE_INTERVAL);
            every.tick().await;
            loop {
                every.tick().await;
                match weak.upgrade() {
                    Some(limiters) => limiters.prune(),
                    None => return,
                }
            }
        });
        Self { limiters }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimitService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService {
            inner,
            limiters: self.limiters.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RateLimitService<S> {
    inner: S,
    limiters: Arc<Limiters>,
}

impl<S, B> Service<Request<B>> for RateLimitService<S>
where
    S: Service<Request<B>, Response = Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let mut inner = crate::service::take_ready(&mut self.inner);
        let address =
            client::of(&request).map(|peer| self.limiters.proxies.client(peer, request.headers()));
        if let Some(address) = address {
            request.extensions_mut().insert(ClientAddress(address));
        }
        if let Some(slot) = request.extensions().get::<crate::audit::AuditSlot>() {
            slot.note_caller(request.extensions().get::<Principal>(), address);
        }
        let user = request.extensions().get::<Principal>().map(|p| p.user_id);
        let verdict = self
            .limiters
            .check(budget_of(request.uri().path()), address, user);
        match verdict {
            Ok(()) => Box::pin(inner.call(request)),
            Err((budget, wait)) => {
                metrics::counter!("tally_rate_limited_total", "budget" => budget.name())
                    .increment(1);
                let content_type = request.headers().get(CONTENT_TYPE).cloned();
                let err = Error::rate_limited(
                    format!(
                        "too many {} calls; retry in {} ms",
                        budget.name(),
                        wait.as_millis().max(1)
                    ),
                    // RetryInfo in whole milliseconds, never zero.
                    wait.max(Duration::from_millis(1)),
                );
                Box::pin(async move { Ok(grpc_rejection(err, content_type)) })
            }
        }
    }
}

impl Budget {
    pub const fn name(self) -> &'static str {
        match self {
            Auth => "auth",
            Write => "write",
            Read => "read",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every method of every tally service has a budget, and every budget names a method.
    #[test]
    fn every_rpc_has_a_budget() {
        let methods = crate::proto::tally_method_paths();
        for path in &methods {
            assert!(
                METHOD_BUDGETS.iter().any(|(p, _)| p == path),
                "{path} has no budget"
            );
        }
        assert_eq!(methods.len(), METHOD_BUDGETS.len());
    }

    #[tokio::test]
    async fn a_spent_budget_says_how_long_to_wait_and_others_are_untouched() {
        let layer = RateLimitLayer::new(&RateSettings {
            auth_per_minute: NonZeroU32::new(2).unwrap(),
            writes_per_second: NonZeroU32::new(1).unwrap(),
            trusted_proxies: TrustedProxies::default(),
        });
        let limiters = &layer.limiters;
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(limiters.check(Auth, Some(a), None).is_ok());
        assert!(limiters.check(Auth, Some(a), None).is_ok());
        let (budget, wait) = limiters.check(Auth, Some(a), None).unwrap_err();
        assert_eq!(budget, Auth);
        assert!(
            wait > Duration::from_secs(20) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        // Another address has its own budget; reads have none.
        assert!(limiters.check(Auth, Some(b), None).is_ok());
        for _ in 0..100 {
            assert!(limiters.check(Read, Some(a), None).is_ok());
        }
        // Writes count per user and per address.
        let user = Uuid::now_v7();
        assert!(limiters.check(Write, Some(a), Some(user)).is_ok());
        assert!(
            limiters.check(Write, Some(b), Some(user)).is_err(),
            "same user"
        );
        assert!(
            limiters
                .check(Write, Some(a), Some(Uuid::now_v7()))
                .is_err(),
            "same address"
        );
    }
}
