//! Every `lib/*.tfm` file parses, and every kernel and param carries a `///` doc comment;
//! the kernel inventory matches lib/README.md.

use tfm_dsl::ast::Item;
use tfm_dsl::{FileId, parse_file};
use tfmc_conformance::lib_path;

/// Every library file and the kernels it defines.
const FILES: [(&str, &[&str]); 21] = [
    ("sdpa.tfm", &["sdpa"]),
    ("causal.tfm", &["causal"]),
    ("window.tfm", &["window"]),
    ("gqa.tfm", &["gqa", "mqa"]),
    ("alibi.tfm", &["alibi"]),
    ("softcap.tfm", &["softcap"]),
    ("linear.tfm", &["linear", "linear_causal", "linear_causal_scan"]),
    ("retnet.tfm", &["retention_parallel", "retention_recurrent"]),
    ("mamba.tfm", &["selective_scan"]),
    ("l2.tfm", &["l2_attention"]),
    ("varlen.tfm", &["varlen_causal"]),
    ("model.tfm", &["rmsnorm", "block"]),
    ("paged.tfm", &["paged_decode"]),
    ("half.tfm", &["sdpa_bf16", "causal_bf16", "sdpa_f16"]),
    ("sigmoid.tfm", &["sigmoid_attention", "sigmoid_causal"]),
    ("diff.tfm", &["diff_attention"]),
    ("quiet.tfm", &["softmax_one", "sink_causal", "sink_window"]),
    ("flow.tfm", &["flow_attention"]),
    ("graph.tfm", &["graph_attention"]),
    ("tokenformer.tfm", &["pattention"]),
    ("stick.tfm", &["stick_breaking"]),
];

#[test]
fn every_lib_file_parses_with_documented_kernels() {
    let readme = std::fs::read_to_string(lib_path("README.md")).expect("lib/README.md");
    let mut listed = std::fs::read_dir(lib_path(""))
        .expect("lib/")
        .map(|e| e.expect("dir entry").file_name().into_string().expect("utf-8 name"))
        .filter(|n| n.ends_with(".tfm"))
        .collect::<Vec<_>>();
    listed.sort();
    let mut expected: Vec<&str> = FILES.iter().map(|(f, _)| *f).collect();
    expected.sort();
    assert_eq!(listed, expected, "lib/*.tfm and this test's inventory differ");
    for (file, kernels) in FILES {
        assert!(readme.contains(&format!("`{file}`")), "lib/README.md does not mention {file}");
        let text = std::fs::read_to_string(lib_path(file)).expect("read lib file");
        let ast = parse_file(&text, FileId(0)).unwrap_or_else(|d| panic!("{file}: {d:?}"));
        let mut found = Vec::new();
        for item in &ast.items {
            match item {
                Item::Kernel(k) => {
                    assert!(!k.docs.is_empty(), "{file}: kernel {} has no /// doc", k.name.name);
                    found.push(k.name.name.as_str());
                }
                Item::Param(p) => assert!(!p.docs.is_empty(), "{file}: param {} has no /// doc", p.name.name),
                _ => {}
            }
        }
        assert_eq!(found, kernels, "{file}: kernels");
    }
}
