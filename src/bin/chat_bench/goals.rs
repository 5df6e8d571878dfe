//! The Targets table of issue 17, judged: for each figure it names, the value of every
//! server in the run, ptchat's ratio to each other server, the target, and whether ptchat
//! met it.
//!
//! Only reads figures the scenarios produced (`report::figures`); which scenario carries
//! which figure is stated once, in [`GOALS`].

use std::fmt::Write as _;

use crate::figures::Value;
use crate::report::{Results, figures, json_number, json_string, ratio, same_load, show};
use crate::servers::Kind;

/// A figure of the Targets table: where it comes from, what load two servers must both
/// have carried for their ratio to mean something, and the rule ptchat is judged by
/// (None: shown for comparison, no target).
struct Goal {
    figure: &'static str,
    scenario: &'static str,
    key: &'static str,
    load: &'static str,
    target: &'static str,
    judge: Option<fn(&Results) -> Option<bool>>,
}

const GOALS: &[Goal] = &[
    Goal {
        figure: "latency p99 ms, 100 users",
        scenario: "latency_100",
        key: "p99_ms",
        load: "expected",
        target: "<= ngircd",
        judge: Some(|r| at_most(ptchat(r, "latency_100", "p99_ms"), ngircd(r, "latency_100"))),
    },
    Goal {
        figure: "latency p99 ms, 1,000 users",
        scenario: "latency",
        key: "p99_ms",
        load: "expected",
        target: "<= ngircd",
        judge: Some(|r| at_most(ptchat(r, "latency", "p99_ms"), ngircd(r, "latency"))),
    },
    Goal {
        figure: "broadcast p99 ms, all idle",
        scenario: "scale",
        key: "p99_ms",
        load: "expected",
        target: "< 50, all held",
        judge: Some(|r| {
            let p99 = ptchat(r, "scale", "p99_ms")?;
            Some(p99 < 50.0 && held_all(r)?)
        }),
    },
    Goal {
        figure: "clients signed in (peak)",
        scenario: "scale",
        key: "signed_in",
        load: "attempted",
        target: "",
        judge: None,
    },
    Goal {
        figure: "clients held",
        scenario: "scale",
        key: "held",
        load: "attempted",
        target: "all asked, alive",
        judge: Some(held_all),
    },
    Goal {
        figure: "RSS KiB per idle client",
        scenario: "scale",
        key: "rss_kib_per_client",
        load: "attempted",
        target: "<= 16",
        judge: Some(|r| at_most(ptchat(r, "scale", "rss_kib_per_client"), Some(16.0))),
    },
    Goal {
        figure: "threads per client",
        scenario: "scale",
        key: "threads_per_client",
        load: "attempted",
        target: "",
        judge: None,
    },
    Goal {
        figure: "throughput deliveries/s",
        scenario: "throughput",
        key: "deliveries_per_s",
        load: "expected",
        target: ">= ncat",
        judge: Some(|r| {
            let ncat = figure(r, "throughput", Kind::Ncat, "deliveries_per_s");
            at_most(ncat, ptchat(r, "throughput", "deliveries_per_s"))
        }),
    },
    Goal {
        figure: "throughput lost",
        scenario: "throughput",
        key: "lost",
        load: "expected",
        target: "0",
        judge: Some(|r| Some(ptchat(r, "throughput", "lost")? == 0.0)),
    },
    Goal {
        figure: "throughput reordered",
        scenario: "throughput",
        key: "out_of_order",
        load: "expected",
        target: "0",
        judge: Some(|r| Some(ptchat(r, "throughput", "out_of_order")? == 0.0)),
    },
    Goal {
        figure: "slow consumer p99 ms",
        scenario: "slow_consumer",
        key: "p99_ms",
        load: "expected",
        target: "<= own latency",
        judge: Some(|r| {
            let latency = ptchat(r, "latency", "p99_ms");
            at_most(ptchat(r, "slow_consumer", "p99_ms"), latency)
        }),
    },
];

fn figure(results: &Results, scenario: &str, kind: Kind, key: &str) -> Option<f64> {
    figures(results, scenario, kind)?.number(key)
}

fn ptchat(results: &Results, scenario: &str, key: &str) -> Option<f64> {
    figure(results, scenario, Kind::Ptchat, key)
}

/// ngircd's p99 in `scenario`, if it carried the same load as ptchat.
fn ngircd(results: &Results, scenario: &str) -> Option<f64> {
    if !same_load(results, scenario, Kind::Ngircd, "expected") {
        return None;
    }
    figure(results, scenario, Kind::Ngircd, "p99_ms")
}

/// `a <= b`, when both are figures (a NaN, a percentile of nothing, is none).
fn at_most(a: Option<f64>, b: Option<f64>) -> Option<bool> {
    let (a, b) = (a.filter(|x| !x.is_nan())?, b.filter(|x| !x.is_nan())?);
    Some(a <= b)
}

/// Whether ptchat held every client the scale scenario asked for and lived through it.
fn held_all(results: &Results) -> Option<bool> {
    let f = figures(results, "scale", Kind::Ptchat)?;
    let alive = f.get("server_alive") != Some(&Value::Text("no".into()));
    Some(alive && f.number("held")? >= f.number("attempted")?)
}

/// One row of the Targets table, judged.
pub struct Verdict {
    figure: &'static str,
    target: &'static str,
    values: Vec<(Kind, Option<f64>)>,
    ratios: Vec<(Kind, Option<f64>)>,
    /// None when there is no target, or ptchat did not run the scenario; Some(false)
    /// also when it ran but produced no figure (it failed, or the server died).
    met: Option<bool>,
}

pub fn verdicts(results: &Results, kinds: &[Kind]) -> Vec<Verdict> {
    GOALS
        .iter()
        .filter(|g| results.iter().any(|(s, _)| *s == g.scenario))
        .map(|goal| judge(goal, results, kinds))
        .collect()
}

fn judge(goal: &Goal, results: &Results, kinds: &[Kind]) -> Verdict {
    let value = |kind| figure(results, goal.scenario, kind, goal.key);
    let others = kinds.iter().filter(|k| **k != Kind::Ptchat);
    let ran = results
        .iter()
        .any(|(s, runs)| *s == goal.scenario && runs.iter().any(|(k, _)| *k == Kind::Ptchat));
    let met = match goal.judge {
        Some(rule) if ran => Some(rule(results).unwrap_or(false)),
        _ => None,
    };
    Verdict {
        figure: goal.figure,
        target: goal.target,
        values: kinds.iter().map(|&k| (k, value(k))).collect(),
        ratios: others
            .map(|&k| {
                (
                    k,
                    ratio(results, goal.scenario, goal.key, k, Some(goal.load)),
                )
            })
            .collect(),
        met,
    }
}

impl Verdict {
    pub fn json(&self) -> String {
        let mut out = format!(
            "{{\"figure\": {}, \"target\": {}",
            json_string(self.figure),
            json_string(self.target)
        );
        for (kind, v) in &self.values {
            let _ = write!(out, ", \"{}\": {}", kind.label(), json_number(*v));
        }
        for (kind, r) in &self.ratios {
            let _ = write!(
                out,
                ", \"ptchat_per_{}\": {}",
                kind.label(),
                json_number(*r)
            );
        }
        let met = self
            .met
            .map_or("null", |m| if m { "true" } else { "false" });
        let _ = write!(out, ", \"met\": {met}}}");
        out
    }
}

/// The Targets table: a row per figure, a column per server, ptchat's ratio to each
/// other server (blank where they carried different loads), the target, and the verdict.
pub fn table(verdicts: &[Verdict], kinds: &[Kind]) -> String {
    let mut out = String::new();
    let _ = write!(out, "{:<28}", "target figure");
    for k in kinds {
        let _ = write!(out, " {:>12}", k.label());
    }
    for k in kinds.iter().filter(|k| **k != Kind::Ptchat) {
        let _ = write!(out, " {:>13}", format!("ptchat/{}", k.label()));
    }
    let _ = writeln!(out, "  {:<17} met", "target");
    for v in verdicts {
        let _ = write!(out, "{:<28}", v.figure);
        for (_, x) in &v.values {
            let _ = write!(out, " {:>12}", show(x.map(Value::Num).as_ref()));
        }
        for (_, r) in &v.ratios {
            let _ = write!(
                out,
                " {:>13}",
                r.map_or(String::new(), |r| format!("{r:.2}"))
            );
        }
        let met = match v.met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "",
        };
        let _ = write!(out, "  {:<17} {met}", v.target);
        out.truncate(out.trim_end().len());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::figures::Figures;

    fn run(pairs: &[(&'static str, f64)]) -> Result<Figures, String> {
        let mut f = Figures::default();
        for (k, v) in pairs {
            f.num(k, *v);
        }
        Ok(f)
    }

    fn met(verdicts: &[Verdict], figure: &str) -> Option<bool> {
        verdicts
            .iter()
            .find(|v| v.figure == figure)
            .and_then(|v| v.met)
    }

    #[test]
    fn each_target_is_judged_by_its_own_rule() {
        let died = {
            let mut f = run(&[("attempted", 10000.0), ("signed_in", 8119.0), ("held", 0.0)])
                .expect("figures");
            f.text("server_alive", "no");
            f.num("rss_kib_per_client", 61.0);
            Ok(f)
        };
        let results: Results = vec![
            (
                "latency",
                vec![
                    (Kind::Ptchat, run(&[("expected", 100.0), ("p99_ms", 60.0)])),
                    (Kind::Ngircd, run(&[("expected", 100.0), ("p99_ms", 20.0)])),
                ],
            ),
            (
                "latency_100",
                vec![
                    (Kind::Ptchat, run(&[("expected", 100.0), ("p99_ms", 10.0)])),
                    // ngircd lost messages: a different load, so no comparison, not met
                    (Kind::Ngircd, run(&[("expected", 90.0), ("p99_ms", 20.0)])),
                ],
            ),
            ("scale", vec![(Kind::Ptchat, died)]),
            (
                "throughput",
                vec![
                    (
                        Kind::Ptchat,
                        run(&[("expected", 9.0), ("deliveries_per_s", 2e7), ("lost", 0.0)]),
                    ),
                    (
                        Kind::Ncat,
                        run(&[("expected", 9.0), ("deliveries_per_s", 1.6e7)]),
                    ),
                ],
            ),
            (
                "slow_consumer",
                vec![(Kind::Ptchat, run(&[("expected", 100.0), ("p99_ms", 59.0)]))],
            ),
        ];
        let verdicts = verdicts(&results, &[Kind::Ptchat, Kind::Ncat, Kind::Ngircd]);
        // figure -> verdict
        let rows = [
            ("latency p99 ms, 1,000 users", Some(false)),
            ("latency p99 ms, 100 users", Some(false)),
            ("broadcast p99 ms, all idle", Some(false)),
            ("clients signed in (peak)", None),
            ("clients held", Some(false)),
            ("RSS KiB per idle client", Some(false)),
            ("threads per client", None),
            ("throughput deliveries/s", Some(true)),
            ("throughput lost", Some(true)),
            ("throughput reordered", Some(false)),
            ("slow consumer p99 ms", Some(true)),
        ];
        for (figure, expected) in rows {
            assert_eq!(met(&verdicts, figure), expected, "{figure}");
        }
        let printed = table(&verdicts, &[Kind::Ptchat, Kind::Ncat, Kind::Ngircd]);
        let latency = printed
            .lines()
            .find(|l| l.starts_with("latency p99 ms, 1,000 users"))
            .expect("latency row");
        assert_eq!(
            latency.split_whitespace().skip(5).collect::<Vec<_>>(),
            ["60", "-", "20", "3.00", "<=", "ngircd", "NO"],
            "{printed}"
        );
    }
}
