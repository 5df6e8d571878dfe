//! The report: every figure of every scenario in a table, servers side by side with
//! ptchat's ratio to each of the others, the same as JSON, and the list of ptchat failures
//! that make the bench exit with status 1.
//!
//! It only formats and compares figures; the targets they are judged against are in
//! `goals.rs`.

use std::fmt::Write as _;

use crate::figures::{Figures, Value};
use crate::goals::Verdict;
use crate::machine::Machine;
use crate::servers::Kind;

/// One server's run of a scenario: its figures, or why there are none.
pub type Run = (Kind, Result<Figures, String>);
pub type Results = Vec<(&'static str, Vec<Run>)>;

/// Figures compared between the servers, and whether the comparison needs both to have
/// carried the same load (the same `expected` deliveries): a p99 over 10,000 clients is no
/// comparison with one over the 779 that ncat took.
const RATIOS: &[(&str, &str, bool)] = &[
    ("throughput", "deliveries_per_s", true),
    // The servers' own cost, which the deliveries per second hide once the load
    // generator's core is what sets the pace (`load_gen_cpu_s`).
    ("throughput", "server_cpu_s", true),
    ("latency_100", "p50_ms", true),
    ("latency_100", "p99_ms", true),
    ("latency", "p50_ms", true),
    ("latency", "p99_ms", true),
    ("scale", "signed_in", false),
    ("scale", "held", false),
    ("scale", "rss_kib_per_client", false),
    ("scale", "p99_ms", true),
    ("slow_consumer", "p99_ms", true),
];

/// Width of a server's column; a text that does not fit becomes a numbered note.
const CELL: usize = 14;

/// The figures of `kind`'s run of `scenario`, if it produced any.
pub fn figures<'a>(results: &'a Results, scenario: &str, kind: Kind) -> Option<&'a Figures> {
    let (_, runs) = results.iter().find(|(s, _)| *s == scenario)?;
    let (_, run) = runs.iter().find(|(k, _)| *k == kind)?;
    run.as_ref().ok()
}

/// Whether ptchat and `other` both ran `scenario` and carried the same load: the same
/// value of the figure `load` names (`expected` deliveries, `attempted` clients).
pub fn same_load(results: &Results, scenario: &str, other: Kind, load: &str) -> bool {
    let load_of = |kind| figures(results, scenario, kind).and_then(|f| f.get(load));
    load_of(Kind::Ptchat).is_some() && load_of(Kind::Ptchat) == load_of(other)
}

/// ptchat's `key` divided by `other`'s, when both ran `scenario` and, if `load` names a
/// figure, carried the same load ([`same_load`]).
pub fn ratio(
    results: &Results,
    scenario: &str,
    key: &str,
    other: Kind,
    load: Option<&str>,
) -> Option<f64> {
    if load.is_some_and(|load| !same_load(results, scenario, other, load)) {
        return None;
    }
    let a = figures(results, scenario, Kind::Ptchat)?.number(key)?;
    let b = figures(results, scenario, other)?.number(key)?;
    (a.is_finite() && b.is_finite() && b != 0.0).then_some(a / b)
}

pub fn show(v: Option<&Value>) -> String {
    match v {
        None => "-".into(),
        Some(Value::Text(t)) => t.clone(),
        Some(Value::Num(x)) => show_number(*x),
    }
}

fn show_number(x: f64) -> String {
    if x.is_nan() {
        "n/a".into()
    } else if (x.fract() == 0.0 && x.abs() < 1e15) || x.abs() >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

/// The kinds ptchat is compared with: every other kind in the run, when ptchat ran.
fn others(kinds: &[Kind]) -> Vec<Kind> {
    if !kinds.contains(&Kind::Ptchat) {
        return Vec::new();
    }
    kinds
        .iter()
        .copied()
        .filter(|k| *k != Kind::Ptchat)
        .collect()
}

/// Every figure of every scenario, one row each, a column per server and one per ratio.
/// Texts too long for a column are numbered and printed under the table.
pub fn table(results: &Results, kinds: &[Kind]) -> String {
    let mut out = String::new();
    let mut notes = Vec::new();
    let _ = write!(out, "{:<14} {:<20}", "scenario", "figure");
    for k in kinds {
        let _ = write!(out, " {:>CELL$}", k.label());
    }
    for k in others(kinds) {
        let _ = write!(out, " {:>CELL$}", format!("ptchat/{}", k.label()));
    }
    out.push('\n');
    for (scenario, runs) in results {
        for key in keys(runs) {
            let _ = write!(out, "{scenario:<14} {key:<20}");
            for kind in kinds {
                let cell = cell(runs, *kind, key);
                let mut text = show(cell.as_ref());
                if text.len() > CELL {
                    notes.push(format!("{scenario} {} {key}: {text}", kind.label()));
                    text = format!("[{}]", notes.len());
                }
                let _ = write!(out, " {text:>CELL$}");
            }
            let compared = RATIOS.iter().find(|(s, k, _)| s == scenario && *k == key);
            for other in others(kinds) {
                let load = compared.and_then(|(_, _, same)| same.then_some("expected"));
                let r = compared.and_then(|_| ratio(results, scenario, key, other, load));
                let shown = r.map_or(String::new(), |r| format!("{r:.2}"));
                let _ = write!(out, " {shown:>CELL$}");
            }
            out.truncate(out.trim_end().len());
            out.push('\n');
        }
    }
    for (i, note) in notes.iter().enumerate() {
        let _ = writeln!(out, "[{}] {note}", i + 1);
    }
    out
}

/// The figure names of a scenario's runs, in first-seen order (`error` for a failed run).
fn keys(runs: &[Run]) -> Vec<&'static str> {
    let mut keys: Vec<&'static str> = Vec::new();
    for (_, run) in runs {
        let names = match run {
            Ok(f) => f.0.iter().map(|(k, _)| *k).collect(),
            Err(_) => vec!["error"],
        };
        for name in names {
            if !keys.contains(&name) {
                keys.push(name);
            }
        }
    }
    keys
}

fn cell(runs: &[Run], kind: Kind, key: &str) -> Option<Value> {
    match runs.iter().find(|(k, _)| *k == kind).map(|(_, r)| r) {
        Some(Ok(f)) => f.get(key).cloned(),
        Some(Err(e)) if key == "error" => Some(Value::Text(e.clone())),
        _ => None,
    }
}

pub fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A number as JSON: NaN and infinities have no JSON form and become `null`.
pub fn json_number(x: Option<f64>) -> String {
    match x {
        Some(x) if x.is_finite() => format!("{x}"),
        _ => "null".into(),
    }
}

pub fn json(
    results: &Results,
    verdicts: &[Verdict],
    machine: &Machine,
    date: &str,
    pinned: &str,
) -> String {
    let mut out = String::from("{\n");
    let _ = writeln!(out, "  \"date\": {},", json_string(date));
    let _ = writeln!(
        out,
        "  \"machine\": {{\"cores\": {}, \"kernel\": {}, \"ulimit_n\": {}, \"pid_max\": {}, \
         \"threads_max\": {}, \"max_map_count\": {}, \"pinning\": {}}},",
        machine.cores,
        json_string(&machine.kernel),
        machine.fd_limit,
        machine.pid_max,
        machine.threads_max,
        machine.max_map_count,
        json_string(pinned)
    );
    out.push_str("  \"scenarios\": {\n");
    let scenarios: Vec<String> = results.iter().map(json_scenario).collect();
    out.push_str(&scenarios.join(",\n"));
    out.push_str("\n  },\n  \"targets\": [\n");
    let rows: Vec<String> = verdicts
        .iter()
        .map(|v| format!("    {}", v.json()))
        .collect();
    out.push_str(&rows.join(",\n"));
    out.push_str("\n  ]\n}\n");
    out
}

fn json_scenario((scenario, runs): &(&'static str, Vec<Run>)) -> String {
    let runs: Vec<String> = runs
        .iter()
        .map(|(kind, run)| {
            let fields: Vec<String> = match run {
                Ok(f) => f.0.iter().map(|(k, v)| json_field(k, v)).collect(),
                Err(e) => vec![format!("\"error\": {}", json_string(e))],
            };
            format!(
                "      {}: {{{}}}",
                json_string(kind.label()),
                fields.join(", ")
            )
        })
        .collect();
    format!(
        "    {}: {{\n{}\n    }}",
        json_string(scenario),
        runs.join(",\n")
    )
}

fn json_field(key: &str, value: &Value) -> String {
    let value = match value {
        Value::Num(x) => json_number(Some(*x)),
        Value::Text(t) => json_string(t),
    };
    format!("{}: {value}", json_string(key))
}

/// What ptchat got wrong: a scenario it could not run, a message lost or out of order, or
/// a server that did not survive. Any of these makes the bench exit with status 1.
pub fn ptchat_failures(results: &Results) -> Vec<String> {
    let mut failures = Vec::new();
    for (scenario, runs) in results {
        for (kind, run) in runs {
            if *kind != Kind::Ptchat {
                continue;
            }
            match run {
                Err(e) => failures.push(format!("{scenario}: {e}")),
                Ok(f) => failures.extend(figure_failures(f).map(|e| format!("{scenario}: {e}"))),
            }
        }
    }
    failures
}

fn figure_failures(f: &Figures) -> impl Iterator<Item = String> + '_ {
    let counts = ["lost", "out_of_order"].into_iter().filter_map(|key| {
        let x = f.number(key)?;
        (x != 0.0).then(|| format!("{key} = {x}"))
    });
    let died = f
        .get("server_exit")
        .map(|how| format!("the server died ({})", show(Some(how))));
    counts.chain(died)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(pairs: &[(&'static str, f64)]) -> Result<Figures, String> {
        let mut f = Figures::default();
        for (k, v) in pairs {
            f.num(k, *v);
        }
        Ok(f)
    }

    /// The cells after the scenario and figure names in the printed row, if there is one.
    fn row(printed: &str, scenario: &str, key: &str) -> Option<Vec<String>> {
        let prefix = format!("{scenario:<14} {key:<20}");
        let line = printed.lines().find(|l| l.starts_with(&prefix))?;
        Some(line.split_whitespace().skip(2).map(String::from).collect())
    }

    #[test]
    fn ratios_compare_only_runs_that_carried_the_same_load() {
        let results: Results = vec![
            (
                "scale",
                vec![
                    (
                        Kind::Ptchat,
                        figures(&[
                            ("expected", 49995.0),
                            ("signed_in", 10000.0),
                            ("p99_ms", 212.0),
                        ]),
                    ),
                    (
                        Kind::Ncat,
                        figures(&[("expected", 3885.0), ("signed_in", 778.0), ("p99_ms", 15.0)]),
                    ),
                    (
                        Kind::Ngircd,
                        figures(&[
                            ("expected", 49995.0),
                            ("signed_in", 10000.0),
                            ("p99_ms", 106.0),
                        ]),
                    ),
                ],
            ),
            (
                "slow_consumer",
                vec![
                    (
                        Kind::Ptchat,
                        figures(&[("expected", 100.0), ("p99_ms", 30.0)]),
                    ),
                    (
                        Kind::Ncat,
                        figures(&[("expected", 100.0), ("p99_ms", 60.0)]),
                    ),
                    (Kind::Ngircd, Err("only 3 of 10 clients signed in".into())),
                ],
            ),
        ];
        let printed = table(&results, &[Kind::Ptchat, Kind::Ncat, Kind::Ngircd]);
        // (scenario, figure) -> ptchat, ncat, ngircd, then the ratios that apply
        let expected_rows: [(&str, &str, &[&str]); 4] = [
            (
                "scale",
                "signed_in",
                &["10000", "778", "10000", "12.85", "1.00"],
            ),
            ("scale", "p99_ms", &["212", "15", "106", "2.00"]),
            ("slow_consumer", "p99_ms", &["30", "60", "-", "0.50"]),
            ("slow_consumer", "error", &["-", "-", "[1]"]),
        ];
        for (scenario, key, cells) in expected_rows {
            assert_eq!(
                row(&printed, scenario, key),
                Some(cells.iter().map(|c| c.to_string()).collect()),
                "{scenario} {key}\n{printed}"
            );
        }
        assert!(
            printed.contains("[1] slow_consumer ngircd error: only 3 of 10 clients signed in"),
            "{printed}"
        );
    }

    #[test]
    fn ptchat_fails_on_loss_disorder_a_failed_run_or_a_death() {
        let mut died = Figures::default();
        died.num("lost", 0.0);
        died.text("server_exit", "signal: 6 (SIGABRT)");
        // (ptchat's run) -> failures reported
        let rows: [(Result<Figures, String>, usize); 5] = [
            (figures(&[("lost", 0.0), ("out_of_order", 0.0)]), 0),
            (figures(&[("lost", 3.0), ("out_of_order", 0.0)]), 1),
            (figures(&[("lost", 3.0), ("out_of_order", 2.0)]), 2),
            (Err("only 5 of 10 clients signed in".into()), 1),
            (Ok(died), 1),
        ];
        for (run, count) in rows {
            let results: Results = vec![("latency", vec![(Kind::Ptchat, run)])];
            let failures = ptchat_failures(&results);
            assert_eq!(failures.len(), count, "{failures:?}");
        }
        let others: Results = vec![("latency", vec![(Kind::Ncat, figures(&[("lost", 9.0)]))])];
        assert!(
            ptchat_failures(&others).is_empty(),
            "other servers' losses are figures"
        );
    }

    #[test]
    fn numbers_print_as_integers_when_whole_or_large_and_json_has_no_nan() {
        let rows = [
            (3.0, "3"),
            (19859778.4, "19859778"),
            (60.114, "60.11"),
            (0.5, "0.50"),
            (f64::NAN, "n/a"),
        ];
        for (x, shown) in rows {
            assert_eq!(show_number(x), shown, "{x}");
        }
        assert_eq!(json_number(Some(f64::NAN)), "null");
        assert_eq!(json_number(None), "null");
        assert_eq!(json_number(Some(2.5)), "2.5");
        assert_eq!(json_string("a\"b\\\n"), "\"a\\\"b\\\\\\u000a\"");
    }
}
