//! The admin console as tests read it, and ending an in-process pgheal.

use std::time::Duration;

use pgheal::proxy::ProxyHandle;
use tokio_postgres::SimpleQueryMessage;

/// One row of a simple query's answer: (column, value) pairs, in order.
pub type Row = Vec<(String, Option<String>)>;

/// The rows of a simple query's answer.
pub fn named_rows(msgs: &[SimpleQueryMessage]) -> Vec<Row> {
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                r.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name().to_owned(), r.get(i).map(str::to_owned)))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// End pgheal and every session now (the tests' clients may still be connected).
pub async fn stop_now(p: ProxyHandle) {
    p.stop_with(pgheal::proxy::Stop::Immediate);
    tokio::time::timeout(Duration::from_secs(15), p.wait())
        .await
        .expect("pgheal stops within 15 s");
}
