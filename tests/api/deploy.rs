//! The operations files stay true to the code: the Grafana dashboard parses and charts only metrics
//! that exist, and the README documents every metric. (YAML is linted by `.ci/run` with yamllint;
//! the compose file and the image are run by `compose.rs`.)

use std::{collections::BTreeSet, path::Path};
use suppressd::telemetry::metrics::names;

pub fn read(relative: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)).unwrap()
}

/// Every `suppressd_…` metric a text mentions, with the series suffixes Prometheus adds removed.
fn metrics_named_in(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("suppressd_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        if name == "suppressd_" {
            continue; // the prefix alone, as in `grep '^suppressd_'`
        }
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|b| names::ALL.contains(b)))
            .unwrap_or(&name);
        found.insert(base.to_owned());
    }
    found
}

#[test]
fn the_dashboard_parses_and_charts_only_metrics_that_exist() {
    let text = read("deploy/grafana/dashboards/suppressd.json");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10);
    let charted = metrics_named_in(&text);
    for name in &charted {
        assert!(names::ALL.contains(&name.as_str()), "unknown metric {name}");
    }
    // Every metric is on the dashboard.
    for name in names::ALL {
        assert!(charted.contains(*name), "{name} is not charted");
    }
}

#[test]
fn the_operations_guide_documents_every_metric() {
    let documented = metrics_named_in(&read("docs/operations.md"));
    for name in names::ALL {
        assert!(
            documented.contains(*name),
            "docs/operations.md does not mention {name}"
        );
    }
    for name in &documented {
        assert!(
            names::ALL.contains(&name.as_str()),
            "docs/operations.md names unknown {name}"
        );
    }
}
