//! The results table: a column per registry, berth first, then berth's ratio to each peer.

use crate::server::Kind;

/// One registry's results: a line per measurement, in the same order for every registry
/// (None where it was not measured), and notes saying why a line was not.
pub struct Column {
    pub kind: Kind,
    lines: Vec<(String, Option<f64>)>,
    notes: Vec<String>,
}

impl Column {
    pub fn new(kind: Kind) -> Column {
        Column {
            kind,
            lines: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn record(&mut self, label: String, value: f64) {
        let kind = self.kind.label();
        eprintln!("  {kind:<12} {label:<44} {value:>10.2}");
        self.lines.push((label, Some(value)));
    }

    /// A line this registry has no figure for; `note` below says why.
    pub fn skip(&mut self, label: String) {
        let kind = self.kind.label();
        eprintln!("  {kind:<12} {label:<44} {:>10}", "-");
        self.lines.push((label, None));
    }

    pub fn note(&mut self, note: String) {
        eprintln!("  {:<12} {note}", self.kind.label());
        self.notes.push(note);
    }
}

fn number(v: f64) -> String {
    match v.abs() {
        a if a >= 100.0 => format!("{v:.0}"),
        a if a >= 10.0 => format!("{v:.1}"),
        _ => format!("{v:.2}"),
    }
}

pub fn print(columns: &[Column]) {
    let Some(first) = columns.first() else {
        return;
    };
    let width = first.lines.iter().map(|(l, _)| l.len()).max().unwrap_or(0) + 2;
    let mut head = format!("{:<width$}", "workload");
    for c in columns {
        head += &format!("{:>12}", c.kind.label());
    }
    // berth / each peer.
    let ratios: Vec<String> = columns[1..]
        .iter()
        .map(|c| format!("vs {}", c.kind.label()))
        .collect();
    for r in &ratios {
        head += &format!("{r:>w$}", w = r.len().max(7) + 2);
    }
    println!("\n{head}");
    for (i, (label, _)) in first.lines.iter().enumerate() {
        let values: Vec<Option<f64>> = columns.iter().map(|c| c.lines[i].1).collect();
        let mut line = format!("{label:<width$}");
        for v in &values {
            line += &format!("{:>12}", v.map_or("-".into(), number));
        }
        for (r, v) in ratios.iter().zip(&values[1..]) {
            let ratio = match (values[0], v) {
                (Some(berth), Some(other)) => format!("{:.2}", berth / other),
                _ => "-".into(),
            };
            line += &format!("{ratio:>w$}", w = r.len().max(7) + 2);
        }
        println!("{line}");
    }
    if !ratios.is_empty() {
        println!("(vs X = berth / X; for ms, s and MiB of RSS, lower is better; - = not measured)");
    }
    for c in columns {
        for note in &c.notes {
            println!("{}: {note}", c.kind.label());
        }
    }
}
