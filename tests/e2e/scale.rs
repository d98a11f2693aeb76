//! Scale: sixteen members on one switch, joined with tokens and started together, find each
//! other within seconds, and again after a clean restart of all, after a crash of all, after a
//! member moves, and once the inviter is gone for good; every daemon keeps answering `weft
//! status`. Also the by-hand benchmark behind `tests/bench/scale.sh` (`scale_bench`, ignored in
//! CI): the same steps at several sizes, with what an idle member costs.

use std::time::{Duration, Instant};

use crate::harness::{Bridge, Check, Fleet, Lab, Usage, MAX_MEMBERS};

/// Members of the CI scenario.
const MEMBERS: usize = 16;

/// Every ordered pair must answer within this time of the step (start, move, retirement).
const CONVERGE_WITHIN: Duration = Duration::from_secs(30);

/// Prints the step's figures, then fails naming whatever went wrong in it.
fn expect(check: &Check) {
    println!("scale: {}", check.figures());
    let problems = check.problems();
    assert!(
        problems.is_empty(),
        "{}:\n  {}",
        check.step,
        problems.join("\n  ")
    );
}

/// Fails naming the members a stop went wrong for (ignored SIGTERM, exited uncleanly).
fn expect_clean(what: &str, problems: &[String]) {
    assert!(problems.is_empty(), "{what}: {}", problems.join("; "));
}

#[test]
fn sixteen_members_converge_after_fresh_start_restart_crash_and_a_move_and_survive_losing_the_inviter(
) {
    let lab = Lab::new("scale-sixteen");
    let bridge = Bridge::new(&lab, "", MEMBERS);
    let mut fleet = Fleet::enroll(&lab, &bridge);
    let all = fleet.active();
    let peers = MEMBERS - 1;
    let since = fleet.started();
    expect(&fleet.check("fresh start", &all, since, CONVERGE_WITHIN, peers));

    expect_clean("SIGTERM to all", &fleet.stop_all());
    fleet.start_all();
    let since = fleet.started();
    let step = "SIGTERM to all, all started at once";
    expect(&fleet.check(step, &all, since, CONVERGE_WITHIN, peers));

    expect_clean("SIGKILL to all", &fleet.crash_all());
    fleet.start_all();
    let since = fleet.started();
    let step = "SIGKILL to all, all started at once";
    expect(&fleet.check(step, &all, since, CONVERGE_WITHIN, peers));

    let mover = 5;
    let moved = Instant::now();
    let to = fleet.move_member(mover);
    let step = format!("{} moved to {to}", fleet.members()[mover].name);
    expect(&fleet.check(&step, &all, moved, CONVERGE_WITHIN, peers));

    // The inviter (and only authority holder) goes away for good: the rest keep their mesh, and
    // find a member that moves afterwards without it.
    let inviter_gone = Instant::now();
    if let Some(problem) = fleet.retire(0) {
        panic!("stopping the inviter: {problem}");
    }
    let rest = fleet.active();
    // Each lists at least the members still running (the stopped one was not revoked).
    let peers = rest.len() - 1;
    let step = format!("{} stopped for good", fleet.members()[0].name);
    expect(&fleet.check(&step, &rest, inviter_gone, CONVERGE_WITHIN, peers));

    let mover = 9;
    let moved = Instant::now();
    let to = fleet.move_member(mover);
    let step = format!(
        "{} moved to {to} with the inviter gone",
        fleet.members()[mover].name
    );
    expect(&fleet.check(&step, &rest, moved, CONVERGE_WITHIN, peers));
}

/// A benchmark setting from the environment, or its default.
fn setting(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{key}={v:?} is not a number"))
        })
        .unwrap_or(default)
}

/// A step's time to full mesh in seconds, or `fail:MISSING/PAIRS`, for a `ROW` line.
fn mesh_time(check: &Check) -> String {
    let r = &check.reach;
    r.full_mesh_after().map_or_else(
        || format!("fail:{}/{}", r.missing.len(), r.pairs),
        |t| format!("{:.1}", t.as_secs_f64()),
    )
}

/// Max and mean of `f` over the members' idle usage.
fn max_mean(usage: &[Usage], f: impl Fn(&Usage) -> f64) -> (f64, f64) {
    let values: Vec<f64> = usage.iter().map(f).collect();
    let max = values.iter().copied().fold(0.0, f64::max);
    (max, values.iter().sum::<f64>() / values.len().max(1) as f64)
}

/// By hand (`tests/bench/scale.sh`): for each size in `WEFT_SCALE_N` (comma list, default
/// 8,16,32,64), the time to full mesh after a fresh start, a SIGTERM and a SIGKILL restart of
/// all and a move, then what each member costs over `WEFT_SCALE_IDLE` s (30) of idleness.
/// Steps may take `WEFT_SCALE_LIMIT` s (60). Prints one `ROW` line per size.
#[test]
#[ignore = "benchmark, run by hand with tests/bench/scale.sh"]
fn scale_bench() {
    let sizes: Vec<usize> = std::env::var("WEFT_SCALE_N")
        .unwrap_or_else(|_| "8,16,32,64".to_owned())
        .split(',')
        .map(|n| {
            n.trim()
                .parse()
                .expect("WEFT_SCALE_N is a comma list of sizes")
        })
        .collect();
    let idle = Duration::from_secs(setting("WEFT_SCALE_IDLE", 30));
    let limit = Duration::from_secs(setting("WEFT_SCALE_LIMIT", 60));
    let lab = Lab::new("scale-bench");
    for n in sizes {
        assert!(
            (2..=MAX_MEMBERS).contains(&n),
            "sizes are 2 to {MAX_MEMBERS}"
        );
        let bridge = Bridge::new(&lab, &format!("b{n}"), n);
        let mut fleet = Fleet::enroll(&lab, &bridge);
        let all = fleet.active();
        let mut steps = Vec::new();
        let mut stop_problems = Vec::new();
        let mut run = |fleet: &mut Fleet<'_>, step: &str, since: Instant| {
            let check = fleet.check(step, &all, since, limit, n - 1);
            println!("scale-bench n={n}: {}", check.figures());
            for problem in check.problems() {
                println!("scale-bench n={n}: {step}: {problem}");
            }
            steps.push(check);
        };
        let since = fleet.started();
        run(&mut fleet, "fresh start", since);
        stop_problems.extend(fleet.stop_all());
        fleet.start_all();
        let since = fleet.started();
        run(&mut fleet, "SIGTERM+restart", since);
        stop_problems.extend(fleet.crash_all());
        fleet.start_all();
        let since = fleet.started();
        run(&mut fleet, "SIGKILL+restart", since);
        let moved = Instant::now();
        fleet.move_member(n - 1);
        run(&mut fleet, "move", moved);
        for problem in &stop_problems {
            println!("scale-bench n={n}: {problem}");
        }
        // The last step's probes are over; let what they started settle.
        std::thread::sleep(Duration::from_secs(5));
        let usage = fleet.idle_usage(&all, idle);
        let busiest = usage
            .iter()
            .max_by(|a, b| a.cpu_percent.total_cmp(&b.cpu_percent));
        if let Some(u) = busiest {
            let name = &fleet.members()[u.member].name;
            println!(
                "scale-bench n={n}: busiest idle member {name}: {:.1} % CPU",
                u.cpu_percent
            );
        }
        let (rss_max, rss_mean) = max_mean(&usage, |u| u.rss_kib as f64 / 1024.0);
        let (cpu_max, cpu_mean) = max_mean(&usage, |u| u.cpu_percent);
        let (ctl_max, ctl_mean) = max_mean(&usage, |u| u.control_pps);
        let (data_max, data_mean) = max_mean(&usage, |u| u.data_pps);
        let frozen: usize = steps
            .iter()
            .map(|c| c.frozen().len() + c.exited.len())
            .sum::<usize>()
            + stop_problems.len();
        let times: Vec<String> = steps.iter().map(mesh_time).collect();
        println!(
            "ROW {n} {} {rss_max:.1} {rss_mean:.1} {cpu_max:.1} {cpu_mean:.1} \
             {ctl_max:.1} {ctl_mean:.1} {data_max:.1} {data_mean:.1} {frozen}",
            times.join(" ")
        );
    }
}
