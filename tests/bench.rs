//! `ssnet bench --size tiny` end to end: its JSON report has every key (old and new), the
//! GPU times are there when the adapter offers timestamps, and `tools/bench_torch.py` writes
//! the same keys (checked on its source: PyTorch is not needed to build or test the crate);
//! `ssnet bench admt3d admt2d` runs the AD-MT steps alone. No timing is asserted.

use std::process::Command;

const TOP: &[&str] = &[
    "engine",
    "adapter",
    "size",
    "tf32",
    "gpu_timer",
    "tuned",
    "tensor_cores",
    "iteration3d",
    "iteration2d",
    "inference3d",
    "admt3d",
    "admt2d",
    "peak_memory_3d_bytes",
    "peak_memory_2d_bytes",
    "peak_memory_admt3d_bytes",
    "peak_memory_admt2d_bytes",
    "layers",
];
const TIMING: &[&str] = &[
    "ms",
    "gflop",
    "gflops",
    "batch",
    "gpu_ms",
    "gpu_busy_ms",
    "gpu_gflops",
];
const LAYER: &[&str] = &[
    "net",
    "layer",
    "shape",
    "pass",
    "ms",
    "gflop",
    "gflops",
    "gpu_ms",
    "gpu_busy_ms",
    "gpu_gflops",
];

fn keys(v: &serde_json::Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("an object").keys().cloned().collect();
    k.sort();
    k
}

fn sorted(k: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = k.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// A timing object's GPU fields: numbers with busy <= span when timed, else all null.
fn check_gpu_fields(what: &str, t: &serde_json::Value, timed: bool) {
    let (span, busy, rate) = (&t["gpu_ms"], &t["gpu_busy_ms"], &t["gpu_gflops"]);
    if !timed {
        assert!(
            span.is_null() && busy.is_null() && rate.is_null(),
            "{what}: {t}"
        );
        return;
    }
    let (s, b) = (span.as_f64().unwrap(), busy.as_f64().unwrap());
    assert!(s > 0.0 && b > 0.0 && b <= s * (1.0 + 1e-9), "{what}: {t}");
    assert!(rate.as_f64().unwrap() > 0.0, "{what}: {t}");
}

/// `ssnet bench --size tiny <args>`: stdout and the JSON report (checked to be stdout's last
/// line).
fn bench(args: &[&str]) -> (String, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let o = Command::new(env!("CARGO_BIN_EXE_ssnet"))
        .args(["bench", "--size", "tiny"])
        .args(args)
        .arg("--json")
        .arg(&json)
        .env(
            "XDG_RUNTIME_DIR",
            std::env::var("XDG_RUNTIME_DIR").unwrap_or("/tmp/xdg".into()),
        )
        .env_remove("SSNET_TUNE")
        .output()
        .unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "ssnet bench failed:\n{out}\n{err}");
    let text = std::fs::read_to_string(&json).unwrap();
    assert_eq!(
        out.lines().last().unwrap().trim(),
        text.trim(),
        "the JSON is also the last line of stdout"
    );
    (out, serde_json::from_str(&text).unwrap())
}

#[test]
fn bench_tiny_json_has_every_key() {
    let (out, rep) = bench(&["--reps", "1", "--warmup", "0"]);
    assert_eq!(keys(&rep), sorted(TOP), "top-level keys");
    assert_eq!(rep["size"], "tiny");
    assert_eq!(rep["tuned"], false);
    assert_eq!(rep["tensor_cores"], "off");
    let timed = !rep["gpu_timer"].is_null();
    println!("gpu_timer: {}", rep["gpu_timer"]);
    assert!(
        out.contains(if timed {
            "GPU timestamps"
        } else {
            "wall clock only"
        }),
        "the table says how it timed:\n{out}"
    );
    for k in [
        "iteration3d",
        "iteration2d",
        "inference3d",
        "admt3d",
        "admt2d",
    ] {
        assert_eq!(keys(&rep[k]), sorted(TIMING), "{k} keys");
        assert!(rep[k]["ms"].as_f64().unwrap() > 0.0, "{k}");
        check_gpu_fields(k, &rep[k], timed);
    }
    let layers = rep["layers"].as_array().unwrap();
    assert_eq!(layers.len(), (15 + 19) * 3);
    for l in layers {
        assert_eq!(keys(l), sorted(LAYER), "layer keys of {l}");
        check_gpu_fields("layer", l, timed);
    }

    // The PyTorch side writes the same keys.
    let py = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tools/bench_torch.py"))
        .unwrap();
    for k in TOP.iter().chain(TIMING).chain(LAYER) {
        assert!(
            py.contains(&format!("\"{k}\"")),
            "tools/bench_torch.py never writes \"{k}\""
        );
    }
}

/// The AD-MT rows alone: both steps run (VNet 2 + 2 and UNet 2 + 2 at the tiny sizes), the
/// other rows are null, the table names them, and the GFLOP is the documented count (the
/// teachers on U, the student's forward and backward on L + 2U).
#[test]
fn bench_admt_rows_run_alone_with_their_flop_count() {
    use ssnet::bench::admt::admt_gflop;
    use ssnet::nn::Arch;
    let (out, rep) = bench(&["admt3d", "admt2d", "--reps", "2", "--warmup", "1"]);
    for k in [
        "iteration3d",
        "iteration2d",
        "inference3d",
        "peak_memory_3d_bytes",
    ] {
        assert!(rep[k].is_null(), "{k} was not asked for: {}", rep[k]);
    }
    assert_eq!(rep["layers"].as_array().unwrap().len(), 0);
    let timed = !rep["gpu_timer"].is_null();
    for (k, arch, sample, classes, label) in [
        (
            "admt3d",
            Arch::VNet,
            vec![1, 1, 16, 16, 16],
            2,
            "AD-MT 3D step (VNet, LA)",
        ),
        (
            "admt2d",
            Arch::UNet,
            vec![1, 1, 32, 32],
            4,
            "AD-MT 2D step (UNet, ACDC)",
        ),
    ] {
        let t = &rep[k];
        assert_eq!(keys(t), sorted(TIMING), "{k} keys");
        assert!(t["ms"].as_f64().unwrap() > 0.0, "{k}");
        check_gpu_fields(k, t, timed);
        let want = admt_gflop(arch, &sample, 2, 2, classes);
        assert!(
            (t["gflop"].as_f64().unwrap() - want).abs() < 1e-9 * want,
            "{k}: {t}"
        );
        assert_eq!(t["batch"][0], 4, "{k}");
        assert!(out.contains(label), "the table row of {k}:\n{out}");
        let peak = &rep[format!("peak_memory_{k}_bytes").as_str()];
        assert!(peak.as_u64().unwrap() > 0, "{k}: peak {peak}");
    }
}
