//! The oracle's report: one [`CheckResult`] per fact of the truth (expected, observed, every
//! difference) and the pass/fail table. Pure; no delivery guarantee.

use serde::Serialize;

/// One line of the oracle's table.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub name: String,
    pub expected: String,
    pub observed: String,
    pub differences: Vec<String>,
    /// False when the pipeline was not asked to produce this output (e.g. no database given).
    pub applicable: bool,
}

impl CheckResult {
    /// A check the pipeline was asked to pass.
    pub(crate) fn checked(
        name: &str,
        expected: String,
        observed: String,
        differences: Vec<String>,
    ) -> Self {
        CheckResult {
            name: name.into(),
            expected,
            observed,
            differences,
            applicable: true,
        }
    }

    pub fn passed(&self) -> bool {
        !self.applicable || self.differences.is_empty()
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub checks: Vec<CheckResult>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(CheckResult::passed)
    }

    pub fn differences(&self) -> usize {
        self.checks
            .iter()
            .filter(|c| c.applicable)
            .map(|c| c.differences.len())
            .sum()
    }

    /// The pass/fail table, then every difference.
    pub fn render(&self, max_listed: usize) -> String {
        let mut s = format!(
            "{:<38} {:>14} {:>14}  {}\n",
            "check", "expected", "observed", "result"
        );
        for c in &self.checks {
            let result = if !c.applicable {
                "n/a".to_string()
            } else if c.differences.is_empty() {
                "PASS".to_string()
            } else {
                format!("FAIL ({} differences)", c.differences.len())
            };
            s.push_str(&format!(
                "{:<38} {:>14} {:>14}  {result}\n",
                c.name, c.expected, c.observed
            ));
        }
        for c in self
            .checks
            .iter()
            .filter(|c| c.applicable && !c.differences.is_empty())
        {
            s.push_str(&format!("\n{}:\n", c.name));
            for d in c.differences.iter().take(max_listed) {
                s.push_str(&format!("  - {d}\n"));
            }
            if c.differences.len() > max_listed {
                s.push_str(&format!(
                    "  ... and {} more\n",
                    c.differences.len() - max_listed
                ));
            }
        }
        s.push_str(&format!(
            "\noracle: {} ({} differences)\n",
            if self.passed() { "PASS" } else { "FAIL" },
            self.differences()
        ));
        s
    }
}
