//! Opening and reading accounts, and an account's statement (its entries).

use uuid::Uuid;

use super::{ACCOUNT_NAME_CHARS_MAX, Account, Entry, Ledger, Page, page};
use crate::{
    auth::{Permission, Principal},
    error::{Error, Reason, Result},
    identity::validate,
    store::{self, accounts::AccountRow},
};

/// A validated `CreateAccount`.
#[derive(Debug, Clone)]
pub struct OpenAccount {
    pub currency: String,
    /// `None`: the caller.
    pub owner: Option<String>,
    pub name: String,
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
    ) -> Result<OpenAccount> {
        Ok(OpenAccount {
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
        let mut tx = crate::db::begin(&self.pool).await?;
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
        store::accounts::insert(&mut tx, id, owner_id, &open.name, &open.currency).await?;
        let row = store::accounts::by_id(&mut tx, id)
            .await?
            .ok_or_else(|| Error::internal(anyhow::anyhow!("inserted account vanished")))?;
        tx.commit().await?;
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
        let owner_id = match owner {
            None => principal.user_id,
            Some(o) if principal.is(&o) => principal.user_id,
            Some(o) if principal.can(Permission::AccountsReadAny) => {
                store::users::by_username(&mut conn, &o)
                    .await?
                    .ok_or(Error::NotFound("user"))?
                    .id
            }
            Some(_) => return Err(Error::NotFound("user")),
        };
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
