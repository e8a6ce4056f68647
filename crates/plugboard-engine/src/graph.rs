//! Dependency logic, kept pure so that it can be tested as tables: cycle detection, which
//! plugins are active, and the order of a chain.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};

use plugboard_core::{DependType, PluginRecord};

/// What the dependency logic needs to know of a plugin.
pub(crate) struct Node<'a> {
    pub(crate) record: &'a PluginRecord,
    pub(crate) loaded: bool,
}

/// Finds the cycle that `name` depending on `depends` would close, given the other plugins'
/// dependencies. Returns it as `name -> … -> name`.
pub(crate) fn find_cycle(
    name: &str,
    depends: &[String],
    others: &BTreeMap<String, Vec<String>>,
) -> Option<Vec<String>> {
    // The existing graph is acyclic (every registration was checked), so any new cycle
    // passes through `name`: search for a path from its dependencies back to it.
    fn walk<'a>(
        at: &'a str,
        target: &str,
        others: &'a BTreeMap<String, Vec<String>>,
        seen: &mut HashSet<&'a str>,
        path: &mut Vec<String>,
    ) -> bool {
        if at == target {
            return true;
        }
        if !seen.insert(at) {
            return false;
        }
        path.push(at.to_owned());
        if let Some(next) = others.get(at) {
            for n in next {
                if walk(n, target, others, seen, path) {
                    return true;
                }
            }
        }
        path.pop();
        false
    }
    let mut seen = HashSet::new();
    for d in depends {
        let mut path = vec![name.to_owned()];
        if walk(d, name, others, &mut seen, &mut path) {
            path.push(name.to_owned());
            return Some(path);
        }
    }
    None
}

/// Which plugins are active: they want to run, their code is loaded, and (for hard
/// dependencies) every dependency is active, transitively.
pub(crate) fn active_set<'a>(nodes: &HashMap<&'a str, Node<'a>>) -> HashSet<&'a str> {
    fn is_active<'a>(
        name: &'a str,
        nodes: &HashMap<&'a str, Node<'a>>,
        memo: &mut HashMap<&'a str, bool>,
        visiting: &mut HashSet<&'a str>,
    ) -> bool {
        if let Some(&v) = memo.get(name) {
            return v;
        }
        let Some(node) = nodes.get(name) else {
            return false;
        };
        // A cycle cannot be registered; treat one as inactive rather than recurse forever.
        if !visiting.insert(name) {
            return false;
        }
        let mut active = node.loaded && node.record.status.wants_to_run();
        if active && node.record.depend_type == DependType::Hard {
            for d in &node.record.depends {
                let Some((key, _)) = nodes.get_key_value(d.as_str()) else {
                    active = false;
                    break;
                };
                if !is_active(key, nodes, memo, visiting) {
                    active = false;
                    break;
                }
            }
        }
        visiting.remove(name);
        memo.insert(name, active);
        active
    }
    let mut memo = HashMap::new();
    let mut visiting = HashSet::new();
    nodes
        .keys()
        .copied()
        .filter(|n| is_active(n, nodes, &mut memo, &mut visiting))
        .collect()
}

/// Orders one event's active plugins: dependencies first, then priority, then name.
pub(crate) fn chain_order<'a>(members: &[&'a PluginRecord]) -> Vec<&'a PluginRecord> {
    let index: HashMap<&str, usize> = members
        .iter()
        .enumerate()
        .map(|(i, r)| (r.name.as_str(), i))
        .collect();
    let mut indegree = vec![0usize; members.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); members.len()];
    for (i, r) in members.iter().enumerate() {
        for d in &r.depends {
            if let Some(&j) = index.get(d.as_str()) {
                indegree[i] += 1;
                dependents[j].push(i);
            }
        }
    }
    let key = |i: usize| Reverse((members[i].priority, members[i].name.as_str(), i));
    let mut ready: BinaryHeap<_> = (0..members.len())
        .filter(|&i| indegree[i] == 0)
        .map(key)
        .collect();
    let mut out = Vec::with_capacity(members.len());
    while let Some(Reverse((_, _, i))) = ready.pop() {
        out.push(members[i]);
        for &k in &dependents[i] {
            indegree[k] -= 1;
            if indegree[k] == 0 {
                ready.push(key(k));
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::type_complexity)] // the tables' shapes are their documentation
mod tests {
    use super::*;
    use plugboard_core::{Priority, Status};

    fn rec(name: &str, priority: u8, status: Status, hard: bool, depends: &[&str]) -> PluginRecord {
        PluginRecord {
            name: name.into(),
            event: "e".into(),
            priority: Priority::new(priority.into()).unwrap(),
            status,
            depend_type: if hard {
                DependType::Hard
            } else {
                DependType::Soft
            },
            depends: depends.iter().map(|d| (*d).to_owned()).collect(),
            extra: vec![],
            inserted_at: time::OffsetDateTime::UNIX_EPOCH,
            updated_at: time::OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn cycles_as_a_table() {
        // (existing edges, new plugin, its depends, expected cycle)
        let cases: &[(&[(&str, &[&str])], &str, &[&str], Option<&[&str]>)] = &[
            (&[], "a", &["b"], None),
            (&[("b", &["a"])], "a", &["b"], Some(&["a", "b", "a"])),
            (
                &[("b", &["c"]), ("c", &["a"])],
                "a",
                &["b"],
                Some(&["a", "b", "c", "a"]),
            ),
            (&[("b", &["c"]), ("c", &[])], "a", &["b", "c"], None),
            (&[("x", &["y"]), ("y", &[])], "a", &["x"], None),
        ];
        for (edges, name, depends, expected) in cases {
            let others: BTreeMap<String, Vec<String>> = edges
                .iter()
                .map(|(n, d)| ((*n).to_owned(), d.iter().map(|s| (*s).to_owned()).collect()))
                .collect();
            let deps: Vec<String> = depends.iter().map(|s| (*s).to_owned()).collect();
            let got = find_cycle(name, &deps, &others);
            let expected = expected.map(|e| e.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
            assert_eq!(got, expected, "{name} -> {depends:?} with {edges:?}");
        }
    }

    #[test]
    fn active_sets_as_a_table() {
        use Status::*;
        // (plugins, expected active), each plugin (name, status, loaded, hard depends)
        let cases: &[(&[(&str, Status, bool, &[&str])], &[&str])] = &[
            (&[("a", Started, true, &[])], &["a"]),
            (&[("a", Registered, true, &[])], &[]),
            (&[("a", Started, false, &[])], &[]),
            (&[("a", Stopped, true, &[]), ("b", Held, true, &["a"])], &[]),
            (
                &[("a", Started, true, &[]), ("b", Held, true, &["a"])],
                &["a", "b"],
            ),
            (
                &[
                    ("a", Started, true, &[]),
                    ("b", Started, true, &["a"]),
                    ("c", Started, true, &["b", "z"]),
                ],
                &["a", "b"],
            ),
            (
                &[
                    ("a", Restarted, true, &[]),
                    ("b", Started, true, &["a"]),
                    ("c", Started, true, &["b"]),
                ],
                &["a", "b", "c"],
            ),
        ];
        for (plugins, expected) in cases {
            let records: Vec<PluginRecord> = plugins
                .iter()
                .map(|(n, s, _, d)| rec(n, 50, *s, true, d))
                .collect();
            let nodes: HashMap<&str, Node<'_>> = records
                .iter()
                .zip(plugins.iter())
                .map(|(r, p)| {
                    (
                        r.name.as_str(),
                        Node {
                            record: r,
                            loaded: p.2,
                        },
                    )
                })
                .collect();
            let mut got: Vec<&str> = active_set(&nodes).into_iter().collect();
            got.sort();
            assert_eq!(&got, expected, "{plugins:?}");
        }
    }

    #[test]
    fn chain_order_as_a_table() {
        // (plugins as (name, priority, depends), expected order)
        let cases: &[(&[(&str, u8, &[&str])], &[&str])] = &[
            (
                &[("b", 1, &[]), ("a", 1, &[]), ("c", 0, &[])],
                &["c", "a", "b"],
            ),
            (
                &[("a", 1, &["z"]), ("m", 50, &[]), ("z", 90, &[])],
                &["m", "z", "a"],
            ),
            (&[("x", 5, &["gone"]), ("y", 1, &[])], &["y", "x"]),
            (
                &[("c", 0, &["b"]), ("b", 0, &["a"]), ("a", 100, &[])],
                &["a", "b", "c"],
            ),
        ];
        for (plugins, expected) in cases {
            let records: Vec<PluginRecord> = plugins
                .iter()
                .map(|(n, p, d)| rec(n, *p, Status::Started, false, d))
                .collect();
            let refs: Vec<&PluginRecord> = records.iter().collect();
            let got: Vec<&str> = chain_order(&refs)
                .into_iter()
                .map(|r| r.name.as_str())
                .collect();
            assert_eq!(&got, expected, "{plugins:?}");
        }
    }
}
