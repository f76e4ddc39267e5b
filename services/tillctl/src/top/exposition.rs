//! The Prometheus text exposition format, read: what a service's `/metrics` says, as samples.
//!
//! Only what the view needs: `name{label="value",...} value` lines (histogram series included, as
//! plain samples), comments and type lines skipped, label values unescaped (`\\`, `\"`, `\n`).
//! A line that does not parse is skipped and counted, never fatal: one odd metric must not blank
//! the operator's screen.

use std::collections::BTreeMap;

/// One sample: a metric name, its labels and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    /// The value of one label, `""` when the sample has none by that name.
    pub fn label(&self, key: &str) -> &str {
        self.labels.get(key).map(String::as_str).unwrap_or("")
    }
}

/// Every sample of one or more scrapes (the services' names are already namespaced, so the
/// endpoints' samples live side by side; two instances of a service add up).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Samples {
    pub samples: Vec<Sample>,
    /// Lines that were neither a comment nor a sample.
    pub unparsed: usize,
}

impl Samples {
    /// Parse one exposition and add its samples.
    pub fn add_exposition(&mut self, text: &str) {
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match parse_line(line) {
                Some(s) => self.samples.push(s),
                None => self.unparsed += 1,
            }
        }
    }

    /// The samples of one metric.
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }

    /// Whether any sample has this name (a metric a service has not emitted yet is absent).
    pub fn has(&self, name: &str) -> bool {
        self.named(name).next().is_some()
    }

    /// The sum of a metric over all its label sets (0 when absent).
    pub fn sum(&self, name: &str) -> f64 {
        self.named(name).map(|s| s.value).sum()
    }

    /// The largest value of a metric over all its label sets (`None` when absent).
    pub fn max(&self, name: &str) -> Option<f64> {
        self.named(name).map(|s| s.value).reduce(f64::max)
    }

    /// The sum of a metric per value of one label.
    pub fn sum_by(&self, name: &str, label: &str) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for s in self.named(name) {
            *out.entry(s.label(label).to_string()).or_insert(0.0) += s.value;
        }
        out
    }
}

/// One sample line: `name[{labels}] value [timestamp]`.
fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = &line[..name_end];
    if name.is_empty() {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if rest.starts_with('{') {
        let (parsed, after) = parse_labels(&rest[1..])?;
        labels = parsed;
        rest = after;
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// `key="value",...}` → the labels and what follows the closing brace.
fn parse_labels(mut s: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        s = s.trim_start_matches([' ', ',']);
        if let Some(after) = s.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim().to_string();
        s = s[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                c => value.push(c),
            }
        };
        labels.insert(key, value);
        s = &s[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP tillstream_store_bridge_messages_in_total MQTT messages received
# TYPE tillstream_store_bridge_messages_in_total counter
tillstream_store_bridge_messages_in_total{kind="OrderPlaced",store="s000"} 12
tillstream_store_bridge_messages_in_total{kind="RefundIssued",store="s000"} 3
tillstream_store_bridge_messages_in_total{kind="OrderPlaced",store="s001"} 5
tillstream_store_bridge_outbox_depth 7
tillstream_dedup_dead_letters_total{reason="a \"quoted\" reason\\n",store="s,1"} 2 1700000000000
tillstream_store_bridge_latency_seconds_bucket{le="+Inf"} 9
not a sample at all
"#;

    #[test]
    fn samples_labels_and_sums_read_back() {
        let mut s = Samples::default();
        s.add_exposition(TEXT);
        assert_eq!(s.samples.len(), 6);
        assert_eq!(s.unparsed, 1);
        assert_eq!(s.sum("tillstream_store_bridge_messages_in_total"), 20.0);
        assert_eq!(
            s.sum_by("tillstream_store_bridge_messages_in_total", "store"),
            BTreeMap::from([("s000".to_string(), 15.0), ("s001".to_string(), 5.0)])
        );
        assert_eq!(s.max("tillstream_store_bridge_outbox_depth"), Some(7.0));
        assert_eq!(s.max("tillstream_absent"), None);
        let dl = s
            .named("tillstream_dedup_dead_letters_total")
            .next()
            .unwrap();
        assert_eq!(dl.label("reason"), "a \"quoted\" reason\\n");
        assert_eq!(dl.label("store"), "s,1");
        assert_eq!(dl.value, 2.0);
        let inf = s
            .named("tillstream_store_bridge_latency_seconds_bucket")
            .next()
            .unwrap();
        assert_eq!(inf.label("le"), "+Inf");
    }

    #[test]
    fn two_instances_of_a_service_add_up() {
        let mut s = Samples::default();
        s.add_exposition("tillstream_dedup_events_in_total 10\n");
        s.add_exposition("tillstream_dedup_events_in_total 32\n");
        assert_eq!(s.sum("tillstream_dedup_events_in_total"), 42.0);
    }
}
