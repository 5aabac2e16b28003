//! The access policy of every RPC, by its gRPC path. Anything not listed is denied.
//!
//! The policy says who may *call* a method at all: anonymous callers, any signed-in user, or
//! holders of one permission. Rules that depend on the resource (yourself, the owner of an
//! account) are checked by the domain, which answers `NOT_FOUND` for what the caller may not
//! see. A test walks the descriptor set and fails if any method lacks an entry here.

use super::principal::Permission;

/// Who may call a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token needed.
    Public,
    /// Any valid access token of a live session.
    SignedIn,
    /// A live session whose user holds this permission; others get `PERMISSION_DENIED`.
    Requires(Permission),
}

use Access::*;
use Permission::*;

/// Every tally RPC and its access, by gRPC path.
pub const METHOD_POLICIES: &[(&str, Access)] = &[
    ("/tally.v1.UserService/CreateUser", Public),
    ("/tally.v1.UserService/GetUser", SignedIn),
    ("/tally.v1.UserService/UpdateUser", SignedIn),
    ("/tally.v1.UserService/VerifyEmail", Public),
    ("/tally.v1.UserService/ResendVerification", SignedIn),
    ("/tally.v1.SessionService/Login", Public),
    ("/tally.v1.SessionService/RefreshSession", Public),
    ("/tally.v1.SessionService/ListSessions", SignedIn),
    ("/tally.v1.SessionService/RevokeSession", SignedIn),
    ("/tally.v1.RoleService/ListRoles", SignedIn),
    ("/tally.v1.RoleService/GrantRole", Requires(RolesManage)),
    ("/tally.v1.RoleService/RevokeRole", Requires(RolesManage)),
    ("/tally.v1.AccountService/CreateAccount", SignedIn),
    ("/tally.v1.AccountService/GetAccount", SignedIn),
    ("/tally.v1.AccountService/ListAccounts", SignedIn),
    ("/tally.v1.AccountService/ListEntries", SignedIn),
    ("/tally.v1.AccountService/UpdateAccount", SignedIn),
    ("/tally.v1.AccountService/CloseAccount", SignedIn),
    ("/tally.v1.AccountService/GetAccountBalance", SignedIn),
    (
        "/tally.v1.AccountService/Deposit",
        Requires(AccountsDeposit),
    ),
    (
        "/tally.v1.AccountService/Withdraw",
        Requires(AccountsWithdraw),
    ),
    ("/tally.v1.TransferService/CreateTransfer", SignedIn),
    ("/tally.v1.TransferService/CreateTransfers", SignedIn),
    ("/tally.v1.TransferService/PostTransfer", SignedIn),
    ("/tally.v1.TransferService/VoidTransfer", SignedIn),
    ("/tally.v1.TransferService/ReverseTransfer", SignedIn),
    ("/tally.v1.TransferService/GetTransfer", SignedIn),
    ("/tally.v1.TransferService/ListTransfers", SignedIn),
    (
        "/tally.v1.AuditService/ListAuditEvents",
        Requires(AuditRead),
    ),
    ("/tally.v1.ExchangeService/SetRate", Requires(RatesManage)),
    ("/tally.v1.ExchangeService/ListRates", SignedIn),
    ("/tally.v1.ExchangeService/WatchRates", SignedIn),
    ("/tally.v1.ExchangeService/CreateQuote", SignedIn),
    ("/tally.v1.ExchangeService/Convert", SignedIn),
    (
        "/tally.v1.ExchangeService/ListLiquidityAccounts",
        Requires(AccountsReadAny),
    ),
    ("/tally.v1.EventService/WatchAccount", SignedIn),
    ("/tally.v1.EventService/CreateBalanceMonitor", SignedIn),
    ("/tally.v1.EventService/ListBalanceMonitors", SignedIn),
    ("/tally.v1.EventService/DeleteBalanceMonitor", SignedIn),
    ("/tally.v1.WebhookService/CreateWebhook", SignedIn),
    ("/tally.v1.WebhookService/ListWebhooks", SignedIn),
    ("/tally.v1.WebhookService/DeleteWebhook", SignedIn),
];

/// The permissions each method's domain code checks beyond its [`Access`] (the resource rules:
/// your own or anyone's). Kept beside the policies so one test can prove that every permission a
/// role grants is checked by some call; the API tests prove the checks themselves (revoking
/// `customer` refuses opening accounts and moving money).
pub const DOMAIN_CHECKS: &[(&str, &[Permission])] = &[
    ("/tally.v1.UserService/GetUser", &[UsersManage]),
    ("/tally.v1.UserService/UpdateUser", &[UsersManage]),
    ("/tally.v1.UserService/ResendVerification", &[UsersManage]),
    ("/tally.v1.SessionService/ListSessions", &[SessionsManage]),
    ("/tally.v1.SessionService/RevokeSession", &[SessionsManage]),
    (
        "/tally.v1.AccountService/CreateAccount",
        &[AccountsOwn, AccountsCreateAny],
    ),
    ("/tally.v1.AccountService/GetAccount", &[AccountsReadAny]),
    ("/tally.v1.AccountService/ListAccounts", &[AccountsReadAny]),
    ("/tally.v1.AccountService/ListEntries", &[AccountsReadAny]),
    (
        "/tally.v1.AccountService/UpdateAccount",
        &[AccountsReadAny, AccountsManage],
    ),
    (
        "/tally.v1.AccountService/CloseAccount",
        &[AccountsReadAny, AccountsOwn, AccountsManage],
    ),
    (
        "/tally.v1.AccountService/GetAccountBalance",
        &[AccountsReadAny],
    ),
    ("/tally.v1.AccountService/Deposit", &[AccountsReadAny]),
    ("/tally.v1.AccountService/Withdraw", &[AccountsReadAny]),
    (
        "/tally.v1.TransferService/CreateTransfer",
        &[TransfersOwn, TransfersCreateAny],
    ),
    (
        "/tally.v1.TransferService/CreateTransfers",
        &[TransfersOwn, TransfersCreateAny],
    ),
    (
        "/tally.v1.TransferService/PostTransfer",
        &[TransfersOwn, TransfersCreateAny],
    ),
    (
        "/tally.v1.TransferService/VoidTransfer",
        &[TransfersOwn, TransfersCreateAny],
    ),
    (
        "/tally.v1.TransferService/ReverseTransfer",
        &[TransfersOwn, TransfersCreateAny],
    ),
    ("/tally.v1.TransferService/GetTransfer", &[TransfersReadAny]),
    (
        "/tally.v1.TransferService/ListTransfers",
        &[TransfersReadAny],
    ),
    ("/tally.v1.ExchangeService/Convert", &[TransfersOwn]),
    ("/tally.v1.EventService/WatchAccount", &[AccountsReadAny]),
    (
        "/tally.v1.EventService/CreateBalanceMonitor",
        &[AccountsReadAny],
    ),
    (
        "/tally.v1.EventService/ListBalanceMonitors",
        &[AccountsReadAny],
    ),
    (
        "/tally.v1.EventService/DeleteBalanceMonitor",
        &[AccountsReadAny],
    ),
    ("/tally.v1.WebhookService/CreateWebhook", &[AccountsReadAny]),
];

/// Infrastructure services that answer anyone: load balancers and tools like grpcurl use them
/// before they hold a token. Reflection can be switched off instead.
pub const PUBLIC_SERVICES: &[&str] = &[
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// Plain HTTP routes served to anyone. (`/openapi.json`, `/console` and `/docs` never reach this
/// layer: the gateway and the console layer answer them in front of it; JSON calls reach it as
/// gRPC paths.)
pub const PUBLIC_HTTP_PATHS: &[&str] = &["/healthz", "/readyz", "/metrics"];

/// The access for a request path; `None` means deny.
pub fn access_for(path: &str) -> Option<Access> {
    if let Some((_, access)) = METHOD_POLICIES.iter().find(|(p, _)| *p == path) {
        return Some(*access);
    }
    if PUBLIC_SERVICES
        .iter()
        .any(|prefix| path.starts_with(prefix))
        || PUBLIC_HTTP_PATHS.contains(&path)
    {
        return Some(Public);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks the compiled descriptor set: every method of every tally service has a policy.
    #[test]
    fn every_rpc_in_the_descriptor_set_has_an_explicit_policy() {
        let methods = crate::proto::tally_method_paths();
        for path in &methods {
            assert!(
                METHOD_POLICIES.iter().any(|(p, _)| p == path),
                "{path} has no access policy"
            );
        }
        assert_eq!(
            methods.len(),
            METHOD_POLICIES.len(),
            "a policy names a method that does not exist"
        );
    }

    /// No role grants a permission that no call checks: every permission is named by some
    /// method's policy or domain checks, and every method named there exists.
    #[test]
    fn every_permission_is_checked_by_some_method() {
        let methods = crate::proto::tally_method_paths();
        for (path, _) in DOMAIN_CHECKS {
            assert!(methods.iter().any(|m| m == path), "{path} is not a method");
        }
        for permission in Permission::ALL {
            let by_policy = METHOD_POLICIES
                .iter()
                .any(|(_, access)| *access == Requires(permission));
            let by_domain = DOMAIN_CHECKS
                .iter()
                .any(|(_, checked)| checked.contains(&permission));
            assert!(
                by_policy || by_domain,
                "{} is granted but no method checks it",
                permission.name()
            );
        }
    }

    #[test]
    fn unknown_paths_are_denied() {
        assert_eq!(access_for("/tally.v1.UserService/DropDatabase"), None);
        assert_eq!(access_for("/tally.v1.UserService/CreateUser/"), None);
        assert_eq!(access_for("/anything"), None);
        assert_eq!(access_for("/grpc.health.v1.Health/Check"), Some(Public));
    }
}
