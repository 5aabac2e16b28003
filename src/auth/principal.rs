//! The signed-in caller, its roles and their permissions.
//!
//! Roles and permissions are defined here, in code; the `roles` table mirrors them (a store
//! test keeps the two equal) so grants can reference a role by name.

use uuid::Uuid;

use crate::error::{Error, Result};

/// What a role allows. Handlers check these, never role names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Open and use your own accounts.
    AccountsOwn,
    /// Move money out of your own accounts.
    TransfersOwn,
    AccountsReadAny,
    AccountsCreateAny,
    AccountsDeposit,
    AccountsWithdraw,
    TransfersReadAny,
    /// Move money out of anyone's account.
    TransfersCreateAny,
    /// Read and change any user.
    UsersManage,
    /// List and revoke anyone's sessions.
    SessionsManage,
    /// Grant and revoke roles.
    RolesManage,
    /// Read the audit trail.
    AuditRead,
    /// Set overdraft limits; rename and close anyone's accounts.
    AccountsManage,
    /// Set exchange rates.
    RatesManage,
}

impl Permission {
    pub const ALL: [Permission; 14] = [
        Permission::AccountsOwn,
        Permission::TransfersOwn,
        Permission::AccountsReadAny,
        Permission::AccountsCreateAny,
        Permission::AccountsDeposit,
        Permission::AccountsWithdraw,
        Permission::TransfersReadAny,
        Permission::TransfersCreateAny,
        Permission::UsersManage,
        Permission::SessionsManage,
        Permission::RolesManage,
        Permission::AuditRead,
        Permission::AccountsManage,
        Permission::RatesManage,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Permission::AccountsOwn => "accounts.own",
            Permission::TransfersOwn => "transfers.own",
            Permission::AccountsReadAny => "accounts.read_any",
            Permission::AccountsCreateAny => "accounts.create_any",
            Permission::AccountsDeposit => "accounts.deposit",
            Permission::AccountsWithdraw => "accounts.withdraw",
            Permission::TransfersReadAny => "transfers.read_any",
            Permission::TransfersCreateAny => "transfers.create_any",
            Permission::UsersManage => "users.manage",
            Permission::SessionsManage => "sessions.manage",
            Permission::RolesManage => "roles.manage",
            Permission::AuditRead => "audit.read",
            Permission::AccountsManage => "accounts.manage",
            Permission::RatesManage => "rates.manage",
        }
    }
}

/// The built-in roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Customer,
    Banker,
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Customer, Role::Banker, Role::Admin];

    pub const fn name(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Banker => "banker",
            Role::Admin => "admin",
        }
    }

    pub fn from_name(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }

    pub const fn description(self) -> &'static str {
        match self {
            Role::Customer => "Every new user: opens accounts and moves money of their own.",
            Role::Banker => {
                "Reads every account and transfer, deposits, withdraws, opens, limits and closes \
                 accounts, moves money for anyone and sets exchange rates."
            }
            Role::Admin => "Everything, including users, sessions and roles.",
        }
    }

    pub const fn permissions(self) -> &'static [Permission] {
        use Permission::*;
        match self {
            Role::Customer => &[AccountsOwn, TransfersOwn],
            Role::Banker => &[
                AccountsReadAny,
                AccountsCreateAny,
                AccountsDeposit,
                AccountsWithdraw,
                TransfersReadAny,
                TransfersCreateAny,
                AccountsManage,
                RatesManage,
            ],
            Role::Admin => &[
                AccountsReadAny,
                AccountsCreateAny,
                AccountsDeposit,
                AccountsWithdraw,
                TransfersReadAny,
                TransfersCreateAny,
                UsersManage,
                SessionsManage,
                RolesManage,
                AuditRead,
                AccountsManage,
                RatesManage,
            ],
        }
    }
}

/// Who a call runs as: resolved from a verified access token and the live session row.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: Uuid,
    pub username: String,
    pub session_id: Uuid,
    /// The roles held now (re-read at most a few seconds ago), not those in the token.
    pub roles: Vec<Role>,
}

impl Principal {
    pub fn can(&self, permission: Permission) -> bool {
        self.roles
            .iter()
            .any(|role| role.permissions().contains(&permission))
    }

    /// Fails with `PERMISSION_DENIED` unless the caller holds `permission`.
    pub fn require(&self, permission: Permission) -> Result<()> {
        if self.can(permission) {
            Ok(())
        } else {
            Err(Error::permission_denied(format!(
                "requires the {} permission",
                permission.name()
            )))
        }
    }

    pub fn is(&self, username: &str) -> bool {
        self.username == username
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(roles: Vec<Role>) -> Principal {
        Principal {
            user_id: Uuid::now_v7(),
            username: "alice".into(),
            session_id: Uuid::now_v7(),
            roles,
        }
    }

    #[test]
    fn customers_cannot_manage_roles_but_admins_can() {
        assert!(!principal(vec![Role::Customer]).can(Permission::RolesManage));
        assert!(principal(vec![Role::Customer, Role::Admin]).can(Permission::RolesManage));
        assert!(principal(vec![Role::Banker]).can(Permission::AccountsDeposit));
        assert!(!principal(vec![]).can(Permission::AccountsOwn));
    }

    #[test]
    fn role_names_round_trip() {
        for role in Role::ALL {
            assert_eq!(Role::from_name(role.name()), Some(role));
        }
        assert_eq!(Role::from_name("root"), None);
    }
}
