//! Day close: after trading, every device closes every business date it traded on (a sale, a
//! refund or a loyalty redemption) with the totals of its own day book and the seq range the day
//! covers. Pure.

use tillstream_contracts::{DeviceEvent, StoreDayClosed, TenderMethod, TenderTotal};

use super::fleet::{DayBook, FleetGenerator, eur, store_event};
use super::timeline::Timeline;

impl FleetGenerator {
    /// Records each device's `StoreDayClosed` per business date in its day books, in date order.
    pub(super) fn close_days(&mut self, timeline: &Timeline) {
        for d in 0..self.devices.len() {
            // A day with only redemptions is a trading day for finance too: it is closed (with
            // zero sales figures) like the others.
            let redeemed: Vec<i32> = self.devices[d]
                .events
                .iter()
                .filter_map(|p| match &p.event {
                    DeviceEvent::LoyaltyRedeemed(l) => Some(l.business_date),
                    _ => None,
                })
                .collect();
            for date in redeemed {
                self.devices[d].day_books.entry(date).or_default();
            }
            let books: Vec<(i32, DayBook)> = self.devices[d]
                .day_books
                .iter()
                .map(|(date, book)| (*date, book.clone()))
                .collect();
            for (business_date, book) in books {
                let h = self.header(d, timeline.close_time(business_date));
                let close = store_event!(StoreDayClosed, h, {
                    business_date,
                    order_count: book.orders,
                    refund_count: book.refunds,
                    gross: eur(book.gross),
                    discounts: eur(book.discounts),
                    tax: eur(book.tax),
                    net: eur(book.net),
                    refunds: eur(book.refunded),
                    tender_totals: book
                        .tenders
                        .iter()
                        .map(|(method, amount)| TenderTotal {
                            method: match method.as_str() {
                                "Card" => TenderMethod::Card,
                                "Cash" => TenderMethod::Cash,
                                _ => TenderMethod::Mobile,
                            },
                            amount: eur(*amount),
                        })
                        .collect(),
                    first_seq: book.first_seq.max(1),
                    last_seq: h.seq - 1,
                });
                self.record(d, close);
            }
        }
    }
}
