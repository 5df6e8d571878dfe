//! The figures a scenario produces against one server: named numbers and texts in print
//! order, and the helpers that turn what the receivers observed into them.
//!
//! Only arithmetic on what was measured; printing and comparing is `report.rs`'s.

use crate::pool::Tally;

#[derive(Clone, PartialEq, Debug)]
pub enum Value {
    Num(f64),
    Text(String),
}

/// One scenario's figures against one server, in print order.
#[derive(Default, Debug)]
pub struct Figures(pub Vec<(&'static str, Value)>);

impl Figures {
    pub fn num(&mut self, key: &'static str, v: f64) {
        self.0.push((key, Value::Num(v)));
    }

    pub fn text(&mut self, key: &'static str, v: impl Into<String>) {
        self.0.push((key, Value::Text(v.into())));
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    pub fn number(&self, key: &str) -> Option<f64> {
        match self.get(key)? {
            Value::Num(x) => Some(*x),
            Value::Text(_) => None,
        }
    }
}

/// Percentile of a sorted sample, in milliseconds.
pub fn percentile_ms(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

pub fn latency_figures(figures: &mut Figures, tally: &mut Tally) {
    tally.latencies_us.sort_unstable();
    let l = &tally.latencies_us;
    figures.num("p50_ms", percentile_ms(l, 50.0));
    figures.num("p99_ms", percentile_ms(l, 99.0));
    figures.num("max_ms", percentile_ms(l, 100.0));
}

/// Exact counts: what was expected, what arrived, what was lost or out of order.
pub fn delivery_figures(figures: &mut Figures, tally: &Tally, expected: u64, in_time: bool) {
    figures.num("expected", expected as f64);
    figures.num("delivered", tally.delivered as f64);
    figures.num("lost", expected.saturating_sub(tally.delivered) as f64);
    figures.num("out_of_order", tally.out_of_order as f64);
    figures.text(
        "in_time",
        if in_time {
            "yes"
        } else {
            "NO (time bound hit)"
        },
    );
    if let Some(e) = &tally.first_error {
        figures.text("first_error", e.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let sample: Vec<u64> = (1..=100).map(|x| x * 1000).collect();
        assert_eq!(percentile_ms(&sample, 50.0), 50.0);
        assert_eq!(percentile_ms(&sample, 99.0), 99.0);
        assert_eq!(percentile_ms(&sample, 100.0), 100.0);
        assert!(percentile_ms(&[], 50.0).is_nan());
    }
}
