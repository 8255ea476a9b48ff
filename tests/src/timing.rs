//! Program time per packet with BPF_PROG_TEST_RUN, as the regression check and the
//! development benchmarks in `tests/examples` measure it.

use aya::programs::{TestRun, TestRunOptions, Xdp};

/// One pass over `frames`, one test run each: the mean program time in ns (the kernel's own
/// clock around each run) and the verdict of every frame.
///
/// One run per call on purpose: with `repeat` > 1 the kernel swaps the XDP dispatcher in and
/// out around the runs (a `synchronize_rcu` each, milliseconds per call).
pub fn mean_ns(prog: &Xdp, frames: &[Vec<u8>]) -> (f64, Vec<u32>) {
    let mut total = 0u128;
    let mut verdicts = Vec::with_capacity(frames.len());
    for f in frames {
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(f),
                ..Default::default()
            })
            .expect("test run");
        total += r.duration.as_nanos();
        verdicts.push(r.return_value);
    }
    (total as f64 / frames.len().max(1) as f64, verdicts)
}
