//! How the sessions' attribute values (contract 0.2) are spread, for
//! `plugin test --against`: for each attribute, how many sessions set it and
//! what the values look like, so a reader sees at a glance what a candidate
//! writes that the running rules did not.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crate::rules::contract::AttributeValue;
use crate::sink::SessionRow;

/// One attribute's values over a run's sessions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Distribution {
    /// Sessions that set it.
    set: u64,
    /// Of a boolean: how many are true.
    trues: u64,
    /// Of a number: sum, least and greatest.
    numbers: Option<(f64, f64, f64)>,
    /// Of strings (and lists' items): count per value.
    strings: HashMap<String, u64>,
}

impl Distribution {
    fn add(&mut self, value: &AttributeValue) {
        self.set += 1;
        let mut number = |x: f64| {
            let (sum, min, max) = self.numbers.unwrap_or((0.0, x, x));
            self.numbers = Some((sum + x, min.min(x), max.max(x)));
        };
        match value {
            AttributeValue::Boolean(b) => self.trues += u64::from(*b),
            AttributeValue::Long(n) => number(*n as f64),
            AttributeValue::Double(x) => number(*x),
            AttributeValue::String(s) => *self.strings.entry(s.clone()).or_default() += 1,
            AttributeValue::StringList(list) => {
                for s in list {
                    *self.strings.entry(s.clone()).or_default() += 1;
                }
            }
        }
    }
}

impl fmt::Display for Distribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "set {}", self.set)?;
        if let Some((sum, min, max)) = self.numbers {
            let mean = sum / self.set.max(1) as f64;
            return write!(f, ", sum {sum:.2}, mean {mean:.2}, min {min}, max {max}");
        }
        if !self.strings.is_empty() {
            let mut top: Vec<(&String, &u64)> = self.strings.iter().collect();
            top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            let shown: Vec<String> = top.iter().take(3).map(|(s, n)| format!("{s} {n}")).collect();
            return write!(f, ", {} distinct, top: {}", self.strings.len(), shown.join(", "));
        }
        if self.set > 0 {
            write!(f, ", true {}", self.trues)?;
        }
        Ok(())
    }
}

/// Every attribute of `sessions`, by name.
pub fn distributions(sessions: &[SessionRow]) -> BTreeMap<String, Distribution> {
    let mut all: BTreeMap<String, Distribution> = BTreeMap::new();
    for session in sessions {
        for (name, value) in &session.attributes {
            all.entry(name.to_string()).or_default().add(value);
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn session(attributes: Vec<(&str, AttributeValue)>) -> SessionRow {
        SessionRow {
            uuid: "u".into(),
            session_id: "s".into(),
            start_ms: 0,
            end_ms: 0,
            event_count: 1,
            pages: Vec::new(),
            end_reason: "inactivity".into(),
            rule_version: Arc::from("r"),
            attributes: attributes.into_iter().map(|(n, v)| (Arc::from(n), v)).collect(),
        }
    }

    #[test]
    fn each_kind_of_attribute_is_summed_up_in_one_line() {
        let sessions = [
            session(vec![
                ("converted", AttributeValue::Boolean(true)),
                ("revenue", AttributeValue::Double(10.0)),
                ("entry_page", AttributeValue::String("home".into())),
            ]),
            session(vec![
                ("converted", AttributeValue::Boolean(false)),
                ("revenue", AttributeValue::Double(2.5)),
                ("entry_page", AttributeValue::String("home".into())),
            ]),
            session(vec![("entry_page", AttributeValue::String("search".into()))]),
        ];
        let all = distributions(&sessions);
        assert_eq!(all["converted"].to_string(), "set 2, true 1");
        assert_eq!(all["revenue"].to_string(), "set 2, sum 12.50, mean 6.25, min 2.5, max 10");
        assert_eq!(all["entry_page"].to_string(), "set 3, 2 distinct, top: home 2, search 1");
    }
}
