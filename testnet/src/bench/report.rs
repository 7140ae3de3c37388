//! Figures: latency percentiles, rates, and a result printed as a table or JSON.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Latency {
    pub(crate) count: usize,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
}

impl Latency {
    pub(crate) fn of(samples: &mut [Duration]) -> Self {
        samples.sort_unstable();
        let at = |q: f64| {
            if samples.is_empty() {
                return 0.0;
            }
            let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
            samples[i].as_secs_f64() * 1e3
        };
        Self {
            count: samples.len(),
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

/// One row of a benchmark's output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub(crate) case: String,
    pub(crate) metric: String,
    pub(crate) value: f64,
    pub(crate) unit: String,
    /// The same figure for the bare-QUIC baseline, where one applies.
    pub(crate) baseline: Option<f64>,
}

impl Row {
    pub(crate) fn new(case: &str, metric: &str, value: f64, unit: &str) -> Self {
        Self {
            case: case.into(),
            metric: metric.into(),
            value,
            unit: unit.into(),
            baseline: None,
        }
    }

    pub(crate) fn vs(mut self, baseline: f64) -> Self {
        self.baseline = Some(baseline);
        self
    }
}

/// A scenario's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub(crate) scenario: String,
    pub(crate) machine: String,
    pub(crate) rows: Vec<Row>,
    pub(crate) notes: Vec<String>,
}

impl Report {
    pub(crate) fn new(scenario: &str) -> Self {
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        Self {
            scenario: scenario.into(),
            machine: format!("{cores} cores, release={}", !cfg!(debug_assertions)),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// A readable table; `ratio` is Quip's figure divided by the baseline.
    pub(crate) fn table(&self) -> String {
        let mut out = format!("bench {} ({})\n", self.scenario, self.machine);
        out += &format!(
            "{:<28} {:<26} {:>12} {:<6} {:>12} {:>7}\n",
            "case", "metric", "quip", "unit", "bare quic", "ratio"
        );
        for row in &self.rows {
            let (base, ratio) = match row.baseline {
                Some(b) if b != 0.0 => (format!("{b:.1}"), format!("{:.2}", row.value / b)),
                _ => (String::from("-"), String::from("-")),
            };
            out += &format!(
                "{:<28} {:<26} {:>12.1} {:<6} {:>12} {:>7}\n",
                row.case, row.metric, row.value, row.unit, base, ratio
            );
        }
        for note in &self.notes {
            out += &format!("note: {note}\n");
        }
        out
    }
}
