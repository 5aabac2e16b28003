//! Opening, changing, closing and reading accounts, an account's statement (its entries) and
//! its balance at any past instant.

use time::OffsetDateTime;
use uuid::Uuid;

use super::{ACCOUNT_NAME_CHARS_MAX, AMOUNT_MAX, Account, Entry, Ledger, Page, page};
use crate::{
    auth::{Permission, Principal},
    error::{Error, Reason, Result},
    store::{
        self,
        accounts::{AccountRow, Position},
        events::{EventType, NewEvent},
    },
    validate,
};

/// A validated `CreateAccount`.
#[derive(Debug, Clone)]
pub struct OpenAccount {
    pub currency: String,
    /// `None`: the caller.
    pub owner: Option<String>,
    pub name: String,
    /// Needs `accounts.manage` when above 0.
    pub overdraft_limit: i64,
}

/// A validated `UpdateAccount`: what to change (`None`: leave as is).
#[derive(Debug, Clone)]
pub struct AccountUpdate {
    pub id: Uuid,
    pub name: Option<String>,
    pub overdraft_limit: Option<i64>,
}

/// An account's balance at an instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceAt {
    pub account_id: Uuid,
    pub currency: String,
    pub balance: i64,
    pub as_of: OffsetDateTime,
}

/// How far in the future a point-in-time `as_of` may lie before it is refused: the clocks of
/// the client, the server and PostgreSQL never agree exactly.
pub const AS_OF_CLOCK_SKEW_MAX: time::Duration = time::Duration::seconds(5);

/// 0 to [`AMOUNT_MAX`] minor units.
pub fn overdraft_limit(field: &'static str, value: i64) -> Result<i64> {
    if !(0..=AMOUNT_MAX).contains(&value) {
        return Err(Error::invalid(
            field,
            format!("must be from 0 to {AMOUNT_MAX} (minor units)"),
        ));
    }
    Ok(value)
}

/// Trimmed; at most 64 characters; no control characters.
pub fn account_name(field: &'static str, value: &str) -> Result<String> {
    let value = value.trim();
    if value.chars().count() > ACCOUNT_NAME_CHARS_MAX {
        return Err(Error::invalid(
            field,
            format!("must be at most {ACCOUNT_NAME_CHARS_MAX} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(value.to_owned())
}

/// Opening an account for yourself takes `accounts.own` (the customer role's) or
/// `accounts.create_any`.
fn require_own_or_any(principal: &Principal) -> Result<()> {
    if principal.can(Permission::AccountsCreateAny) {
        return Ok(());
    }
    principal.require(Permission::AccountsOwn)
}

impl Ledger {
    pub fn parse_open_account(
        &self,
        currency: &str,
        owner: Option<&str>,
        name: Option<&str>,
        overdraft: Option<i64>,
    ) -> Result<OpenAccount> {
        Ok(OpenAccount {
            overdraft_limit: overdraft_limit("overdraft_limit", overdraft.unwrap_or(0))?,
            currency: self.currencies().require("currency", currency)?,
            owner: owner
                .filter(|o| !o.is_empty())
                .map(|o| validate::username("owner", o))
                .transpose()?,
            name: account_name("name", name.unwrap_or_default())?,
        })
    }

    /// Opens an account: holders of `accounts.own` (customers) for themselves, holders of
    /// `accounts.create_any` for anyone.
    pub async fn create_account(
        &self,
        principal: &Principal,
        open: OpenAccount,
    ) -> Result<Account> {
        if open.overdraft_limit > 0 {
            principal.require(Permission::AccountsManage)?;
        }
        let mut tx = crate::db::begin(&self.pool).await?;
        // The change feed's event is written here: take its writer lock before any row lock.
        if self.settings.feed_events {
            store::events::lock_writer(&mut tx).await?;
        }
        let owner_id = match &open.owner {
            None => {
                require_own_or_any(principal)?;
                principal.user_id
            }
            Some(owner) if principal.is(owner) => {
                require_own_or_any(principal)?;
                principal.user_id
            }
            Some(owner) => {
                principal.require(Permission::AccountsCreateAny)?;
                store::users::by_username(&mut tx, owner)
                    .await?
                    .ok_or(Error::NotFound("user"))?
                    .id
            }
        };
        // The owner's row lock makes the count and the insert one step, so concurrent opens
        // cannot exceed the limit.
        if !store::users::lock_id(&mut tx, owner_id).await? {
            return Err(Error::NotFound("user"));
        }
        let held = store::accounts::count_owned(&mut tx, owner_id).await?;
        if held >= i64::from(self.settings.accounts_per_owner_max) {
            return Err(Error::refused(
                Reason::AccountLimit,
                format!(
                    "an owner may hold at most {} accounts",
                    self.settings.accounts_per_owner_max
                ),
            ));
        }
        let id = Uuid::now_v7();
        store::accounts::insert(
            &mut tx,
            id,
            owner_id,
            &open.name,
            &open.currency,
            open.overdraft_limit,
        )
        .await?;
        let row = store::accounts::by_id(&mut tx, id)
            .await?
            .ok_or_else(|| Error::internal(anyhow::anyhow!("inserted account vanished")))?;
        if self.settings.feed_events {
            let event = NewEvent::account(EventType::AccountOpened, id, Position::default());
            store::events::insert_many(&mut tx, &[event]).await?;
        }
        tx.commit().await?;
        self.committed.send_modify(|n| *n += 1);
        Ok(row.into())
    }

    pub async fn get_account(&self, principal: &Principal, account_id: &str) -> Result<Account> {
        let id = validate::uuid("account_id", account_id)?;
        Ok(self
            .visible_account(principal, id, Permission::AccountsReadAny)
            .await?
            .into())
    }

    /// The caller's accounts, or any owner's for holders of `accounts.read_any`; oldest first.
    /// The balances of every account of `owner` (the caller by default), summed by currency:
    /// who may list the accounts may read this.
    pub async fn balances_by_currency(
        &self,
        principal: &Principal,
        owner: Option<&str>,
    ) -> Result<Vec<(String, i128)>> {
        let owner = owner
            .filter(|o| !o.is_empty())
            .map(|o| validate::username("owner", o))
            .transpose()?;
        let mut conn = crate::db::acquire(&self.pool).await?;
        let owner_id = listed_owner(&mut conn, principal, owner).await?;
        store::accounts::balances_by_currency(&mut conn, owner_id)
            .await?
            .into_iter()
            .map(|(currency, sum)| {
                let sum = sum
                    .parse::<i128>()
                    .map_err(|e| Error::internal(anyhow::anyhow!("balance sum {sum:?}: {e}")))?;
                Ok((currency, sum))
            })
            .collect()
    }

    pub async fn list_accounts(
        &self,
        principal: &Principal,
        owner: Option<&str>,
        page_size: i32,
        page_token: &str,
    ) -> Result<Page<Account>> {
        let owner = owner
            .filter(|o| !o.is_empty())
            .map(|o| validate::username("owner", o))
            .transpose()?;
        let limit = page::page_size(page_size)?;
        let mut conn = crate::db::acquire(&self.pool).await?;
        let owner_id = listed_owner(&mut conn, principal, owner).await?;
        let after = page::cursor(owner_id, page_token)?
            .map(|c| Uuid::parse_str(&c))
            .transpose()
            .map_err(|_| Error::invalid("page_token", "is not a page token of this list"))?;
        let mut rows =
            store::accounts::page_owned(&mut conn, owner_id, after, limit as i64 + 1).await?;
        let next_page_token = page::cut(
            &mut rows,
            limit,
            |a| page::ITEM_FIXED_BYTES + a.name.len(),
            |last| page::token(owner_id, &last.id.to_string()),
        );
        Ok(Page {
            items: rows.into_iter().map(Account::from).collect(),
            next_page_token,
        })
    }

    /// An account's entries, newest first.
    pub async fn list_entries(
        &self,
        principal: &Principal,
        account_id: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<Page<Entry>> {
        let id = validate::uuid("account_id", account_id)?;
        let limit = page::page_size(page_size)?;
        let before = page::seq_cursor(id, page_token)?;
        self.visible_account(principal, id, Permission::AccountsReadAny)
            .await?;
        let mut conn = crate::db::acquire(&self.pool).await?;
        let mut rows =
            store::transfers::entries_page(&mut conn, id, before, limit as i64 + 1).await?;
        let next_page_token = page::cut(
            &mut rows,
            limit,
            |_| page::ITEM_FIXED_BYTES,
            |last| page::token(id, &last.seq.to_string()),
        );
        Ok(Page {
            items: rows.into_iter().map(Entry::from).collect(),
            next_page_token,
        })
    }

    pub fn parse_account_update(
        &self,
        account_id: &str,
        name: Option<&str>,
        overdraft: Option<i64>,
    ) -> Result<AccountUpdate> {
        Ok(AccountUpdate {
            id: validate::uuid("account_id", account_id)?,
            name: name.map(|n| account_name("name", n)).transpose()?,
            overdraft_limit: overdraft
                .map(|l| overdraft_limit("overdraft_limit", l))
                .transpose()?,
        })
    }

    /// Renames an account (its owner, or `accounts.manage`) or sets its overdraft limit
    /// (`accounts.manage`; sending the limit the account already has changes nothing and needs
    /// no permission, so an account read and sent back is accepted). A limit below what the
    /// account already uses is refused (`INSUFFICIENT_FUNDS`); a closed account changes no more
    /// (`ACCOUNT_CLOSED`).
    pub async fn update_account(&self, principal: &Principal, u: AccountUpdate) -> Result<Account> {
        let current = self.changeable_account(principal, u.id).await?;
        let changes_limit = |limit: i64| u.overdraft_limit.is_some_and(|asked| asked != limit);
        if changes_limit(current.overdraft_limit) {
            principal.require(Permission::AccountsManage)?;
        }
        if u.name.is_some() && current.owner_id != Some(principal.user_id) {
            principal.require(Permission::AccountsManage)?;
        }
        if current.pending_debits > 0 && u.overdraft_limit.is_some() {
            // An overdue hold still in `pending_debits` must not count against the new limit.
            self.engine.touch(vec![u.id]).await?;
        }
        let mut tx = crate::db::begin(&self.pool).await?;
        // The row lock orders this change with the transfer batches on the account.
        let locked = store::accounts::lock_one(&mut tx, u.id)
            .await?
            .ok_or(Error::NotFound("account"))?;
        if locked.closed {
            return Err(Error::refused(
                Reason::AccountClosed,
                "the account is closed",
            ));
        }
        // Checked again under the lock: a limit changed since the read above is changed back
        // only with the permission to change it.
        if changes_limit(locked.overdraft_limit) {
            principal.require(Permission::AccountsManage)?;
        }
        let limit = u.overdraft_limit.unwrap_or(locked.overdraft_limit);
        if i128::from(locked.balance) - i128::from(locked.pending_debits) < -i128::from(limit) {
            return Err(Error::refused(
                Reason::InsufficientFunds,
                format!(
                    "the available balance ({}) is already below −{limit}",
                    locked.balance - locked.pending_debits
                ),
            ));
        }
        store::accounts::update_settings(&mut tx, u.id, u.name.as_deref(), limit).await?;
        let row = store::accounts::by_id(&mut tx, u.id)
            .await?
            .ok_or(Error::NotFound("account"))?;
        tx.commit().await?;
        Ok(row.into())
    }

    /// Closes an account at zero balance with nothing pending (`ACCOUNT_NOT_EMPTY` otherwise):
    /// its owner (with `accounts.own`) or `accounts.manage`. Closing a closed account answers
    /// it as it is.
    pub async fn close_account(&self, principal: &Principal, account_id: &str) -> Result<Account> {
        let id = validate::uuid("account_id", account_id)?;
        let current = self.changeable_account(principal, id).await?;
        if current.owner_id == Some(principal.user_id) {
            if !principal.can(Permission::AccountsManage) {
                principal.require(Permission::AccountsOwn)?;
            }
        } else {
            principal.require(Permission::AccountsManage)?;
        }
        if current.closed_at.is_some() {
            return Ok(current.into());
        }
        if current.pending_debits > 0 || current.pending_credits > 0 {
            // Overdue holds still counted here are settled first (an account is not kept open by
            // a hold that no longer counts).
            self.engine.touch(vec![id]).await?;
        }
        let mut tx = crate::db::begin(&self.pool).await?;
        if self.settings.feed_events {
            store::events::lock_writer(&mut tx).await?;
        }
        let locked = store::accounts::lock_one(&mut tx, id)
            .await?
            .ok_or(Error::NotFound("account"))?;
        if !locked.closed {
            if locked.balance != 0 || locked.pending_debits != 0 || locked.pending_credits != 0 {
                return Err(Error::refused(
                    Reason::AccountNotEmpty,
                    format!(
                        "only an empty account can be closed: balance {}, pending debits {}, \
                         pending credits {}",
                        locked.balance, locked.pending_debits, locked.pending_credits
                    ),
                ));
            }
            store::accounts::close(&mut tx, id).await?;
            if self.settings.feed_events {
                let event = NewEvent::account(EventType::AccountClosed, id, Position::default());
                store::events::insert_many(&mut tx, &[event]).await?;
            }
        }
        let row = store::accounts::by_id(&mut tx, id)
            .await?
            .ok_or(Error::NotFound("account"))?;
        tx.commit().await?;
        self.committed.send_modify(|n| *n += 1);
        Ok(row.into())
    }

    /// The balance right after the account's last entry at or before `as_of` (0 before its
    /// first; the current balance when `as_of` is `None`).
    pub async fn account_balance(
        &self,
        principal: &Principal,
        account_id: &str,
        as_of: Option<OffsetDateTime>,
    ) -> Result<BalanceAt> {
        let id = validate::uuid("account_id", account_id)?;
        let now = OffsetDateTime::now_utc();
        if as_of.is_some_and(|t| t > now + AS_OF_CLOCK_SKEW_MAX) {
            return Err(Error::invalid(
                "as_of",
                "must not be in the future: a future balance is not known yet",
            ));
        }
        let account = self
            .visible_account(principal, id, Permission::AccountsReadAny)
            .await?;
        let (balance, as_of) = match as_of {
            None => (account.balance, now),
            Some(t) => {
                let mut conn = crate::db::acquire(&self.pool).await?;
                let balance = store::transfers::balance_at(&mut conn, id, t).await?;
                (balance.unwrap_or(0), t)
            }
        };
        Ok(BalanceAt {
            account_id: id,
            currency: account.currency,
            balance,
            as_of,
        })
    }

    /// An account the caller may see and that is not a system account (those never change).
    async fn changeable_account(&self, principal: &Principal, id: Uuid) -> Result<AccountRow> {
        let account = self
            .visible_account(principal, id, Permission::AccountsReadAny)
            .await?;
        if account.is_system {
            return Err(Error::NotFound("account"));
        }
        Ok(account)
    }

    /// The account if the caller owns it or holds `read_any`; `NOT_FOUND` otherwise, exactly as
    /// for an account that does not exist.
    pub(super) async fn visible_account(
        &self,
        principal: &Principal,
        id: Uuid,
        read_any: Permission,
    ) -> Result<AccountRow> {
        let mut conn = crate::db::acquire(&self.pool).await?;
        store::accounts::by_id(&mut conn, id)
            .await?
            .filter(|a| a.owner_id == Some(principal.user_id) || principal.can(read_any))
            .ok_or(Error::NotFound("account"))
    }
}

/// Whose accounts a listing shows: the caller's own, or, with `accounts.read_any`, the named
/// owner's; another user's name is `NOT_FOUND` like a missing one.
async fn listed_owner(
    conn: &mut sqlx::PgConnection,
    principal: &Principal,
    owner: Option<String>,
) -> Result<Uuid> {
    Ok(match owner {
        None => principal.user_id,
        Some(o) if principal.is(&o) => principal.user_id,
        Some(o) if principal.can(Permission::AccountsReadAny) => {
            store::users::by_username(conn, &o)
                .await?
                .ok_or(Error::NotFound("user"))?
                .id
        }
        Some(_) => return Err(Error::NotFound("user")),
    })
}
