//! Shelf prices: every sku's deterministic opening price and the price lists the cloud approves
//! during the run (each changes a few prices of one store; that store's later sales use them). Pure.

use rand::Rng;
use tillstream_contracts::{PriceItem, PriceListApproved};

use super::PRICING_SERVICE;
use super::fleet::{FleetGenerator, eur, random_uuid, sku_name};

/// Deterministic opening shelf price of a sku (minor units).
pub(super) fn base_price(sku: u32) -> i64 {
    149 + i64::from(sku * 37 % 40) * 50
}

impl FleetGenerator {
    /// The price of `sku` in force at `store` (minor units).
    pub(super) fn price(&self, store: &str, sku: u32) -> i64 {
        self.prices
            .get(&(store.to_string(), sku))
            .copied()
            .unwrap_or_else(|| base_price(sku))
    }

    /// The cloud approves a new price list for `store` at `at`: 1-5 skus change price by -20%..+25%
    /// (rounded to 9 minor units); the list carries every sku's price. Sales after it use it.
    pub(super) fn approve_price_list(&mut self, store: &str, at: i64) {
        let changes = self.rng.random_range(1..=5);
        for _ in 0..changes {
            let sku = self.rng.random_range(0..self.spec.skus.max(1));
            let old = self.price(store, sku);
            let pct = self.rng.random_range(-20..=25);
            let new = ((old * (100 + pct) / 100) / 10 * 10 + 9).max(9);
            self.prices.insert((store.to_string(), sku), new);
        }
        let version = self
            .price_lists
            .iter()
            .filter(|p| p.store_id == store)
            .count() as i64
            + 1;
        let list = PriceListApproved {
            event_id: random_uuid(&mut self.rng),
            device_id: PRICING_SERVICE.into(),
            store_id: store.to_string(),
            seq: version,
            occurred_at: at,
            schema_version: 1,
            price_list_id: format!("pl-{store}-v{version}"),
            effective_from: at,
            approved_by: "pricing@hq".into(),
            items: (0..self.spec.skus)
                .map(|k| PriceItem {
                    sku: sku_name(k),
                    price: eur(self.price(store, k)),
                })
                .collect(),
        };
        self.truth
            .price_lists
            .insert(store.to_string(), list.price_list_id.clone());
        self.price_lists.push(list);
    }
}
