//! `tally.v1.ExchangeService`.

use std::pin::Pin;

use futures_util::{Stream, StreamExt as _};
use tonic::{Request, Response, Status};

use super::{ApiState, principal, timestamp};
use crate::{
    exchange::{Conversion, Quote, QuoteAmount, RateView, RatesUpdate},
    proto::tally_v1::{self as pb, exchange_service_server::ExchangeService},
};

impl From<RateView> for pb::Rate {
    fn from(r: RateView) -> Self {
        pb::Rate {
            base_currency: r.base_currency,
            quote_currency: r.quote_currency,
            rate: r.rate.to_string(),
            // At most SPREAD_BPS_MAX.
            spread_bps: r.spread_bps as i32,
            updated_at: Some(timestamp(r.updated_at)),
        }
    }
}

impl From<RatesUpdate> for pb::WatchRatesResponse {
    fn from(u: RatesUpdate) -> Self {
        pb::WatchRatesResponse {
            rates: u.rates.into_iter().map(Into::into).collect(),
            snapshot: u.snapshot,
            sent_at: Some(timestamp(u.sent_at)),
        }
    }
}

impl From<Quote> for pb::Quote {
    fn from(q: Quote) -> Self {
        pb::Quote {
            quote_id: q.id.to_string(),
            from_currency: q.from_currency,
            to_currency: q.to_currency,
            from_amount: q.from_amount,
            to_amount: q.to_amount,
            rate: q.rate,
            created_at: Some(timestamp(q.created_at)),
            expires_at: Some(timestamp(q.expires_at)),
        }
    }
}

impl From<Conversion> for pb::Conversion {
    fn from(c: Conversion) -> Self {
        pb::Conversion {
            conversion_id: c.id.to_string(),
            quote: Some(c.quote.into()),
            debit: Some(c.legs.debit.into()),
            credit: Some(c.legs.credit.into()),
        }
    }
}

type WatchRatesStream = Pin<Box<dyn Stream<Item = Result<pb::WatchRatesResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExchangeService for ApiState {
    async fn set_rate(
        &self,
        request: Request<pb::SetRateRequest>,
    ) -> Result<Response<pb::Rate>, Status> {
        let principal = principal(&request)?;
        let r = request.into_inner();
        let rate = self
            .exchange
            .set_rate(
                &principal,
                &r.base_currency,
                &r.quote_currency,
                &r.rate,
                r.spread_bps,
            )
            .await?;
        Ok(Response::new(rate.into()))
    }

    async fn list_rates(
        &self,
        _request: Request<pb::ListRatesRequest>,
    ) -> Result<Response<pb::ListRatesResponse>, Status> {
        Ok(Response::new(pb::ListRatesResponse {
            rates: self
                .exchange
                .list_rates()
                .into_iter()
                .map(Into::into)
                .collect(),
        }))
    }

    type WatchRatesStream = WatchRatesStream;

    async fn watch_rates(
        &self,
        request: Request<pb::WatchRatesRequest>,
    ) -> Result<Response<Self::WatchRatesStream>, Status> {
        let principal = principal(&request)?;
        let updates = self.exchange.watch_rates(&principal)?;
        Ok(Response::new(Box::pin(updates.map(|u| Ok(u.into())))))
    }

    async fn create_quote(
        &self,
        request: Request<pb::CreateQuoteRequest>,
    ) -> Result<Response<pb::Quote>, Status> {
        use pb::create_quote_request::Amount;
        let principal = principal(&request)?;
        let r = request.into_inner();
        let amount = r.amount.map(|amount| match amount {
            Amount::FromAmount(units) => QuoteAmount::From(units),
            Amount::ToAmount(units) => QuoteAmount::To(units),
        });
        let quote = self
            .exchange
            .create_quote(&principal, &r.from_currency, &r.to_currency, amount)
            .await?;
        Ok(Response::new(quote.into()))
    }

    async fn convert(
        &self,
        request: Request<pb::ConvertRequest>,
    ) -> Result<Response<pb::Conversion>, Status> {
        let principal = principal(&request)?;
        let r = request.into_inner();
        let conversion = self
            .exchange
            .convert(
                &principal,
                &r.conversion_id,
                &r.quote_id,
                &r.from_account_id,
                &r.to_account_id,
            )
            .await?;
        Ok(Response::new(conversion.into()))
    }

    async fn list_liquidity_accounts(
        &self,
        request: Request<pb::ListLiquidityAccountsRequest>,
    ) -> Result<Response<pb::ListLiquidityAccountsResponse>, Status> {
        let principal = principal(&request)?;
        let accounts = self.exchange.liquidity_accounts(&principal).await?;
        Ok(Response::new(pb::ListLiquidityAccountsResponse {
            accounts: accounts.into_iter().map(Into::into).collect(),
        }))
    }
}
