//! Every YAML document in README.md and docs/ is loaded and validated, so the docs cannot
//! show a config the mesh rejects. A block whose first key is not a top-level key of the
//! config (`certificate_providers`, `listeners`, `route_configs`, `clusters`, `endpoints`) is a
//! fragment: the line
//! before its fence must say so and where it nests (`<!-- fragment: … -->`).

use mesh_core::MeshConfig;
use std::path::{Path, PathBuf};

const TOP_LEVEL: [&str; 6] = [
    "certificate_providers:",
    "servers:",
    "listeners:",
    "route_configs:",
    "clusters:",
    "endpoints:",
];

fn markdown_files(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.join("README.md")];
    let mut dirs = vec![root.join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// (line of the fence, the line before it, the block's text) of every ```yaml block.
fn yaml_blocks(text: &str) -> Vec<(usize, String, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if matches!(lines[i].trim(), "```yaml" | "```yml") {
            let start = i;
            let mut body = String::new();
            i += 1;
            while i < lines.len() && lines[i].trim() != "```" {
                body.push_str(lines[i]);
                body.push('\n');
                i += 1;
            }
            let before = if start > 0 { lines[start - 1] } else { "" };
            out.push((start + 1, before.to_owned(), body));
        }
        i += 1;
    }
    out
}

#[test]
fn every_yaml_document_in_the_docs_validates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let (mut documents, mut fragments, mut problems) = (0, 0, Vec::new());
    for file in markdown_files(&root) {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file
            .strip_prefix(&root)
            .unwrap_or(&file)
            .display()
            .to_string();
        for (line, before, body) in yaml_blocks(&text) {
            let first = body
                .lines()
                .map(str::trim_end)
                .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
                .unwrap_or_default();
            if TOP_LEVEL.iter().any(|k| first.starts_with(k)) {
                documents += 1;
                if let Err(e) = MeshConfig::from_yaml_named(&body, &format!("{name}:{line}")) {
                    problems.push(format!("{name}:{line}: {e}"));
                }
            } else {
                fragments += 1;
                if !before.contains("fragment:") {
                    problems.push(format!(
                        "{name}:{line}: a fragment (`{first}`) must be marked on the line before its fence: <!-- fragment: nests under … -->"
                    ));
                }
            }
        }
    }
    assert!(documents >= 5, "found only {documents} YAML documents");
    assert!(
        problems.is_empty(),
        "{} documents, {fragments} fragments:\n{}",
        documents,
        problems.join("\n")
    );
}

#[test]
fn the_error_quoted_in_the_static_config_guide_is_the_real_one() {
    let yaml = r#"
route_configs:
  - name: r
    virtual_hosts:
      - name: v
        domains: ["*"]
        routes:
          - { match: { prefix: / }, route: { cluster: c } }
          - { match: { safe_regex: { regex: "(" } }, route: { cluster: c } }
clusters: [{ name: c }]
"#;
    let err = MeshConfig::from_yaml(yaml).unwrap_err().to_string();
    let guide = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/guides/static-config.md"),
    )
    .unwrap();
    let quoted = guide
        .split("```text\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the guide quotes an error");
    // The guide shows the file source's prefix; the rest must be what validation says.
    let quoted = quoted
        .trim()
        .strip_prefix("mesh config \"/etc/mesh.yaml\": ")
        .expect("the quote starts with the file source's prefix")
        .replace('\n', " ");
    assert_eq!(
        err.replace('\n', " "),
        quoted,
        "update docs/guides/static-config.md"
    );
}
