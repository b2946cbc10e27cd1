//! Keeps `docs/http-api.md` true: each section's table of `METHOD /path`
//! rows is exactly the routes its router registers (read from the
//! routers' sources), so a route added, moved or removed without its row
//! fails here. (The metrics pages are checked against `docs/metrics.md` by
//! the integration test `metrics::docs_metrics_md_...` and, for streams,
//! by `streams/src/runtime.rs`'s tests.)

use std::collections::BTreeSet;

const HTTP_API_MD: &str = include_str!("../docs/http-api.md");

/// (section of docs/http-api.md, router source, its path in the repo)
const ROUTERS: [(&str, &str, &str); 5] = [
    (
        "Admin listener",
        include_str!("admin/mod.rs"),
        "src/admin/mod.rs",
    ),
    (
        "Web console API",
        include_str!("console/mod.rs"),
        "src/console/mod.rs",
    ),
    (
        "Schema registry",
        include_str!("../schema-registry/src/api.rs"),
        "schema-registry/src/api.rs",
    ),
    (
        "Connect worker",
        include_str!("../connect/src/rest.rs"),
        "connect/src/rest.rs",
    ),
    (
        "Streams interactive queries",
        include_str!("../streams/src/http.rs"),
        "streams/src/http.rs",
    ),
];

const METHODS: [&str; 6] = ["GET", "POST", "PUT", "DELETE", "PATCH", "ANY"];

/// Every `(METHOD, path)` the `.route("path", get(..).post(..))` calls of
/// `source` register, `{*rest}` written `{rest}`.
fn routes_in(source: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let mut rest = source;
    while let Some(at) = rest.find(".route(") {
        rest = &rest[at + ".route(".len()..];
        // The call's text, up to its closing parenthesis.
        let mut depth = 1;
        let mut end = rest.len();
        for (i, c) in rest.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let call = &rest[..end];
        let Some(path) = call
            .trim_start()
            .strip_prefix('"')
            .and_then(|p| p.split('"').next())
        else {
            continue;
        };
        let path = path.replace("{*", "{");
        for m in METHODS {
            let lower = m.to_ascii_lowercase();
            let called = call.match_indices(&format!("{lower}(")).any(|(i, _)| {
                i == 0
                    || !call.as_bytes()[i - 1].is_ascii_alphanumeric()
                        && call.as_bytes()[i - 1] != b'_'
            });
            if called {
                out.insert((m.to_string(), path.clone()));
            }
        }
    }
    out
}

/// The `(METHOD, path)` pairs of the first cells of `## section`'s table
/// rows: `` `GET /a` ``, or `` `GET`, `PUT`, `DELETE /a` `` for several.
fn documented(section: &str) -> BTreeSet<(String, String)> {
    let start = HTTP_API_MD
        .find(&format!("\n## {section}\n"))
        .unwrap_or_else(|| panic!("docs/http-api.md has no section ## {section}"));
    let body = &HTTP_API_MD[start + section.len() + 5..];
    let body = &body[..body.find("\n## ").unwrap_or(body.len())];
    let mut out = BTreeSet::new();
    for row in body.lines().filter(|l| l.starts_with("| `")) {
        let cell = row[1..].split('|').next().unwrap_or_default();
        let mut methods = Vec::new();
        for token in cell.split('`').skip(1).step_by(2) {
            match token.split_once(' ') {
                Some((m, path)) if METHODS.contains(&m) => {
                    methods.push(m);
                    for m in methods.drain(..) {
                        out.insert((m.to_string(), path.to_string()));
                    }
                }
                None if METHODS.contains(&token) => methods.push(token),
                _ => {}
            }
        }
    }
    out
}

#[test]
fn docs_http_api_md_lists_every_route_of_every_router_and_no_other() {
    let mut problems = Vec::new();
    for (section, source, file) in ROUTERS {
        if !HTTP_API_MD.contains(&format!("`{file}`")) {
            problems.push(format!(
                "docs/http-api.md does not name the router `{file}`"
            ));
        }
        let mut code = routes_in(source);
        if section == "Web console API" {
            // The API router is nested under /api; the app's page and its
            // files (`/`, `/console/{file}`) are not.
            code = code
                .into_iter()
                .map(|(m, p)| {
                    if p == "/" || p.starts_with("/console/") {
                        (m, p)
                    } else {
                        (m, format!("/api{p}"))
                    }
                })
                .collect();
        }
        let docs = documented(section);
        for (m, p) in code.difference(&docs) {
            problems.push(format!("## {section}: no row for `{m} {p}` ({file})"));
        }
        for (m, p) in docs.difference(&code) {
            problems.push(format!(
                "## {section}: `{m} {p}` is documented but {file} has no such route"
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn routes_are_read_with_their_methods_across_lines() {
    let source = r#"
        Router::new()
            .route("/a", get(x).post(y))
            .route(
                "/b/{id}",
                get(get_b)
                    .delete(delete_b),
            )
            .route("/c/{*path}", any(proxy))
    "#;
    let got: Vec<(String, String)> = routes_in(source).into_iter().collect();
    let want: Vec<(String, String)> = [
        ("ANY", "/c/{path}"),
        ("DELETE", "/b/{id}"),
        ("GET", "/a"),
        ("GET", "/b/{id}"),
        ("POST", "/a"),
    ]
    .iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    assert_eq!(got, want);
}
