//! What the demo prints as it goes, the summary table, and the same
//! results as JSON.

use std::io::Write;
use std::time::Instant;

use serde_json::{Map, Value, json};

/// One step: printed as it runs, kept for the summary.
pub(crate) struct Step {
    id: String,
    title: String,
    started: Instant,
    to_stderr: bool,
    headline: Vec<String>,
    details: Vec<String>,
    facts: Map<String, Value>,
}

impl Step {
    /// A line under the step, printed now.
    pub(crate) fn detail(&mut self, line: &str) {
        emit(self.to_stderr, &format!("      {line}"));
        self.details.push(line.to_string());
    }

    /// A measured value, for the JSON.
    pub(crate) fn fact(&mut self, key: &str, value: Value) {
        self.facts.insert(key.to_string(), value);
    }

    /// A short figure for the summary table.
    pub(crate) fn headline(&mut self, text: &str) {
        self.headline.push(text.to_string());
    }
}

struct Done {
    id: String,
    title: String,
    ms: u64,
    ok: bool,
    headline: String,
    details: Vec<String>,
    facts: Map<String, Value>,
    error: Option<String>,
}

pub(crate) struct Report {
    to_stderr: bool,
    started: Instant,
    steps: Vec<Done>,
    current: Option<(String, String, Instant)>,
    total: usize,
    meta: Map<String, Value>,
}

fn emit(to_stderr: bool, line: &str) {
    if to_stderr {
        let _ = writeln!(std::io::stderr(), "{line}");
    } else {
        let _ = writeln!(std::io::stdout(), "{line}");
    }
}

impl Report {
    pub(crate) fn new(to_stderr: bool) -> Report {
        Report {
            to_stderr,
            started: Instant::now(),
            steps: Vec::new(),
            current: None,
            total: crate::STEPS,
            meta: Map::new(),
        }
    }

    pub(crate) fn line(&self, text: &str) {
        emit(self.to_stderr, text);
    }

    /// Starts a step: prints its progress line.
    pub(crate) fn step(&mut self, id: &str, title: &str) -> Step {
        let n = self.steps.len() + 1;
        emit(
            self.to_stderr,
            &format!("\n[{n}/{}] {id}: {title}", self.total),
        );
        self.current = Some((id.to_string(), title.to_string(), Instant::now()));
        Step {
            id: id.to_string(),
            title: title.to_string(),
            started: Instant::now(),
            to_stderr: self.to_stderr,
            headline: Vec::new(),
            details: Vec::new(),
            facts: Map::new(),
        }
    }

    /// Ends a step that held.
    pub(crate) fn done(&mut self, step: Step) {
        let ms = step.started.elapsed().as_millis() as u64;
        emit(self.to_stderr, &format!("      ok ({ms} ms)"));
        self.current = None;
        self.steps.push(Done {
            id: step.id,
            title: step.title,
            ms,
            ok: true,
            headline: step.headline.join(", "),
            details: step.details,
            facts: step.facts,
            error: None,
        });
    }

    /// The step under way did not hold (or the demo was interrupted).
    pub(crate) fn fail(&mut self, error: &str) {
        emit(self.to_stderr, &format!("      FAILED: {error}"));
        let (id, title, started) = self
            .current
            .take()
            .unwrap_or_else(|| ("demo".into(), String::new(), self.started));
        self.steps.push(Done {
            id,
            title,
            ms: started.elapsed().as_millis() as u64,
            ok: false,
            headline: String::new(),
            details: Vec::new(),
            facts: Map::new(),
            error: Some(error.to_string()),
        });
    }

    /// Whether every step held.
    pub(crate) fn ok(&self) -> bool {
        self.steps.iter().all(|s| s.ok) && self.steps.len() == self.total
    }

    /// The summary table.
    pub(crate) fn summary(&self) {
        let width = self
            .steps
            .iter()
            .map(|s| s.id.len())
            .max()
            .unwrap_or(4)
            .max(4);
        emit(self.to_stderr, "\nSummary");
        emit(
            self.to_stderr,
            &format!(
                "  {:<width$}  {:<6}  {:>9}  measured",
                "step", "result", "time"
            ),
        );
        for s in &self.steps {
            let result = if s.ok { "ok" } else { "FAILED" };
            let what = match &s.error {
                Some(e) => e.lines().next().unwrap_or("").to_string(),
                None => s.headline.clone(),
            };
            emit(
                self.to_stderr,
                &format!("  {:<width$}  {result:<6}  {:>6} ms  {what}", s.id, s.ms),
            );
        }
        let verdict = if self.ok() {
            format!(
                "all {} steps held, in {:.1} s",
                self.total,
                self.started.elapsed().as_secs_f64()
            )
        } else {
            format!(
                "{} of {} steps held",
                self.steps.iter().filter(|s| s.ok).count(),
                self.total
            )
        };
        emit(self.to_stderr, &format!("  {verdict}"));
    }

    /// A fact about the whole run, for the JSON.
    pub(crate) fn meta(&mut self, key: &str, value: Value) {
        self.meta.insert(key.to_string(), value);
    }

    /// The results, for machines.
    pub(crate) fn json(&self) -> Value {
        json!({
            "run": self.meta,
            "ok": self.ok(),
            "seconds": self.started.elapsed().as_secs_f64(),
            "steps": self.steps.iter().map(|s| json!({
                "id": s.id,
                "title": s.title,
                "ok": s.ok,
                "ms": s.ms,
                "summary": s.headline,
                "details": s.details,
                "facts": s.facts,
                "error": s.error,
            })).collect::<Vec<_>>(),
        })
    }
}
