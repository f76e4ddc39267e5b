//! The chart of accounts (`config/finance/chart_of_accounts.toml`: the account code and name of
//! every [`Role`] the ledger posts to) and the store master data (`config/fleet/stores.csv`: store
//! id, IANA time zone, currency, legal entity). Pure parsing and lookups; no delivery guarantee.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use tillstream_contracts::TenderMethod;

/// What a ledger line posts to. The chart maps each role to an account of the general ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Revenue,
    Discounts,
    Refunds,
    PriceVariance,
    TaxPayable,
    LoyaltyLiability,
    Backorders,
    Receivables,
    /// The clearing account of one tender method (cleared by the till's day close).
    TenderClearing(TenderMethod),
}

impl Role {
    /// The role's name in the files (`tender_clearing` for every method: the method has a column).
    pub fn name(self) -> &'static str {
        match self {
            Role::Revenue => "revenue",
            Role::Discounts => "discounts",
            Role::Refunds => "refunds",
            Role::PriceVariance => "price_variance",
            Role::TaxPayable => "tax_payable",
            Role::LoyaltyLiability => "loyalty_liability",
            Role::Backorders => "backorders",
            Role::Receivables => "receivables",
            Role::TenderClearing(_) => "tender_clearing",
        }
    }
}

/// One account of the general ledger.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Account {
    pub code: String,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountsFile {
    revenue: Account,
    discounts: Account,
    refunds: Account,
    price_variance: Account,
    tax_payable: Account,
    loyalty_liability: Account,
    backorders: Account,
    receivables: Account,
    /// Keyed by tender method (`CASH`, `CARD`, ...): every method needs one.
    tender_clearing: BTreeMap<String, Account>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChartFile {
    schema_version: u32,
    accounts: AccountsFile,
}

/// A chart or stores file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ChartError(pub String);

/// The chart of accounts: the account of every role.
#[derive(Debug, Clone)]
pub struct Chart {
    /// Version of the chart file's format.
    pub schema_version: u32,
    accounts: HashMap<Role, Account>,
}

impl Chart {
    /// Parses a chart file (TOML); every role must have an account.
    pub fn parse(text: &str) -> Result<Chart, ChartError> {
        let file: ChartFile =
            toml::from_str(text).map_err(|e| ChartError(format!("chart of accounts: {e}")))?;
        let a = file.accounts;
        let mut accounts = HashMap::from([
            (Role::Revenue, a.revenue),
            (Role::Discounts, a.discounts),
            (Role::Refunds, a.refunds),
            (Role::PriceVariance, a.price_variance),
            (Role::TaxPayable, a.tax_payable),
            (Role::LoyaltyLiability, a.loyalty_liability),
            (Role::Backorders, a.backorders),
            (Role::Receivables, a.receivables),
        ]);
        for method in super::TENDER_METHODS {
            let name = super::tender_name(method);
            let account = a.tender_clearing.get(name).ok_or_else(|| {
                ChartError(format!(
                    "chart of accounts: no tender_clearing account for {name}"
                ))
            })?;
            accounts.insert(Role::TenderClearing(method), account.clone());
        }
        Ok(Chart {
            schema_version: file.schema_version,
            accounts,
        })
    }

    /// The chart shipped in `config/finance/` (the embedded default).
    pub fn embedded() -> Chart {
        Chart::parse(include_str!(
            "../../../../config/finance/chart_of_accounts.toml"
        ))
        .expect("the shipped chart of accounts parses")
    }

    /// The account of `role` (every role has one: checked by [`Chart::parse`]).
    pub fn account(&self, role: Role) -> &Account {
        &self.accounts[&role]
    }
}

/// One store's master data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    pub store_id: String,
    /// IANA time zone name, e.g. `Europe/Berlin`: where the store's cut-off is.
    pub time_zone: String,
    /// The parsed zone (checked at load).
    pub tz: jiff::tz::TimeZone,
    /// ISO 4217 code the store trades in: every amount of its events must be in it.
    pub currency: String,
    /// The company whose books the store's lines go to.
    pub legal_entity: String,
}

/// The store master data, by store id.
#[derive(Debug, Clone, Default)]
pub struct Stores {
    stores: BTreeMap<String, Store>,
}

impl Stores {
    /// Parses `store_id,time_zone,currency,legal_entity` CSV (a header line first).
    pub fn parse(text: &str) -> Result<Stores, ChartError> {
        let mut stores = BTreeMap::new();
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let header = lines.next().map(|(_, l)| l.trim()).unwrap_or_default();
        if header != "store_id,time_zone,currency,legal_entity" {
            return Err(ChartError(format!(
                "stores file: header must be store_id,time_zone,currency,legal_entity, not {header:?}"
            )));
        }
        for (n, line) in lines {
            let cols: Vec<&str> = line.split(',').map(str::trim).collect();
            let [store_id, time_zone, currency, legal_entity] = cols[..] else {
                return Err(ChartError(format!(
                    "stores file line {}: 4 columns expected",
                    n + 1
                )));
            };
            let tz = jiff::tz::TimeZone::get(time_zone).map_err(|e| {
                ChartError(format!(
                    "stores file line {}: time zone {time_zone}: {e}",
                    n + 1
                ))
            })?;
            if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(ChartError(format!(
                    "stores file line {}: currency {currency:?} is not an ISO 4217 code",
                    n + 1
                )));
            }
            stores.insert(
                store_id.to_string(),
                Store {
                    store_id: store_id.to_string(),
                    time_zone: time_zone.to_string(),
                    tz,
                    currency: currency.to_string(),
                    legal_entity: legal_entity.to_string(),
                },
            );
        }
        Ok(Stores { stores })
    }

    pub fn get(&self, store_id: &str) -> Option<&Store> {
        self.stores.get(store_id)
    }

    pub fn len(&self) -> usize {
        self.stores.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stores.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_chart_has_every_role() {
        let chart = Chart::embedded();
        assert_eq!(chart.account(Role::Revenue).code, "4000");
        assert_eq!(
            chart.account(Role::TenderClearing(TenderMethod::Card)).code,
            "1020"
        );
        let missing = include_str!("../../../../config/finance/chart_of_accounts.toml")
            .replace("CARD = { code = \"1020\", name = \"Card clearing\" }\n", "");
        assert!(Chart::parse(&missing).unwrap_err().0.contains("CARD"));
    }

    #[test]
    fn stores_parse_and_refuse_bad_rows() {
        let s = Stores::parse(include_str!("../../../../config/fleet/stores.csv")).unwrap();
        assert_eq!(s.get("s001").unwrap().currency, "EUR");
        assert!(
            Stores::parse("store_id,time_zone,currency,legal_entity\nx,Mars/Base,EUR,E\n").is_err()
        );
        assert!(Stores::parse("store_id,time_zone,currency,legal_entity\nx,UTC,eur,E\n").is_err());
        assert!(Stores::parse("id,tz\n").is_err());
    }
}
