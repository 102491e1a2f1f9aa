//! Generators: seeded schedules of operations, after Jepsen's generator.
//!
//! A generator never reads a clock, sleeps or spawns anything. The
//! interpreter asks it for the next op with a [`Context`] (the time since
//! the test began and which threads are free) and tells it about every
//! completion through [`Generator::update`]. An op it returns is committed:
//! it names the thread that runs it and the earliest time to invoke it.
//! Randomness comes from per-generator ChaCha streams seeded at
//! construction, so one seed gives one sequence of ops.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use smol_str::SmolStr;
use splitbrain_history::{Op, Value};

/// A worker slot of the interpreter. A client thread runs one process at a
/// time (a fresh process after each crash); the nemesis has its own thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Thread {
    Client(usize),
    Nemesis,
}

/// What a generator may look at.
#[derive(Debug, Clone)]
pub struct Context {
    /// Nanoseconds since the test began.
    pub time_ns: u64,
    /// Threads with no op in flight, in order.
    pub free: Vec<Thread>,
    /// All threads this generator may use (free or busy).
    pub threads: Vec<Thread>,
}

impl Context {
    pub fn new(time_ns: u64, free: Vec<Thread>, threads: Vec<Thread>) -> Self {
        Context {
            time_ns,
            free,
            threads,
        }
    }

    /// The same context seen through a filter on threads.
    pub fn restrict(&self, keep: impl Fn(Thread) -> bool) -> Context {
        Context {
            time_ns: self.time_ns,
            free: self.free.iter().copied().filter(|t| keep(*t)).collect(),
            threads: self.threads.iter().copied().filter(|t| keep(*t)).collect(),
        }
    }

    /// The same context with fewer free threads (all threads still listed).
    pub fn restrict_free(&self, keep: impl Fn(Thread) -> bool) -> Context {
        Context {
            time_ns: self.time_ns,
            free: self.free.iter().copied().filter(|t| keep(*t)).collect(),
            threads: self.threads.clone(),
        }
    }

    pub fn all_free(&self) -> bool {
        self.free.len() == self.threads.len()
    }

    fn first_free(&self) -> Option<Thread> {
        self.free.first().copied()
    }
}

/// An op a generator wants invoked.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    pub thread: Thread,
    /// Invoke no earlier than this (ns since the test began).
    pub time_ns: u64,
    pub f: SmolStr,
    pub value: Value,
    pub key: Option<Value>,
}

/// An op's function and arguments, before a thread and time are chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct OpSpec {
    pub f: SmolStr,
    pub value: Value,
    pub key: Option<Value>,
}

impl OpSpec {
    pub fn new(f: &str, value: impl Into<Value>) -> Self {
        OpSpec {
            f: SmolStr::new(f),
            value: value.into(),
            key: None,
        }
    }

    pub fn with_key(mut self, key: impl Into<Value>) -> Self {
        self.key = Some(key.into());
        self
    }

    fn at(self, thread: Thread, time_ns: u64) -> Invocation {
        Invocation {
            thread,
            time_ns,
            f: self.f,
            value: self.value,
            key: self.key,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Poll {
    Op(Invocation),
    /// Nothing now; ask again after the next completion or `time_ns`.
    Pending {
        wake_ns: Option<u64>,
    },
    Done,
}

impl Poll {
    const PENDING: Poll = Poll::Pending { wake_ns: None };
}

pub trait Generator: Send {
    fn next(&mut self, ctx: &Context) -> Poll;
    /// A completion (ok, fail or info) of an op some generator emitted.
    fn update(&mut self, _ctx: &Context, _thread: Thread, _completion: &Op) {}
}

pub type Gen = Box<dyn Generator>;

impl Generator for Gen {
    fn next(&mut self, ctx: &Context) -> Poll {
        (**self).next(ctx)
    }
    fn update(&mut self, ctx: &Context, thread: Thread, completion: &Op) {
        (**self).update(ctx, thread, completion)
    }
}

/// A seeded random stream, derived from a test seed and a label so that
/// sibling generators draw independently.
pub fn rng_for(seed: u64, label: &str) -> ChaCha8Rng {
    // FNV-1a of the label folded into the seed.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in label.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    ChaCha8Rng::seed_from_u64(seed ^ h)
}

// ---------------------------------------------------------------------------
// Sources.

struct FromFn<F> {
    make: F,
    rng: ChaCha8Rng,
}

impl<F: FnMut(&mut ChaCha8Rng) -> OpSpec + Send> Generator for FromFn<F> {
    fn next(&mut self, ctx: &Context) -> Poll {
        match ctx.first_free() {
            Some(t) => Poll::Op((self.make)(&mut self.rng).at(t, ctx.time_ns)),
            None => Poll::PENDING,
        }
    }
}

/// An endless stream of ops made by `make` from a seeded random stream.
pub fn from_fn(seed: u64, make: impl FnMut(&mut ChaCha8Rng) -> OpSpec + Send + 'static) -> Gen {
    Box::new(FromFn {
        make,
        rng: ChaCha8Rng::seed_from_u64(seed),
    })
}

struct Once(Option<OpSpec>);

impl Generator for Once {
    fn next(&mut self, ctx: &Context) -> Poll {
        if self.0.is_none() {
            return Poll::Done;
        }
        match ctx.first_free() {
            Some(t) => Poll::Op(
                self.0
                    .take()
                    .map(|s| s.at(t, ctx.time_ns))
                    .expect("checked above"),
            ),
            None => Poll::PENDING,
        }
    }
}

/// A single op.
pub fn once(spec: OpSpec) -> Gen {
    Box::new(Once(Some(spec)))
}

struct Sleep {
    duration_ns: u64,
    until_ns: Option<u64>,
}

impl Generator for Sleep {
    fn next(&mut self, ctx: &Context) -> Poll {
        let until = *self.until_ns.get_or_insert(ctx.time_ns + self.duration_ns);
        if ctx.time_ns >= until {
            Poll::Done
        } else {
            Poll::Pending {
                wake_ns: Some(until),
            }
        }
    }
}

/// Emits nothing for a while, then is done (a pause between phases).
pub fn sleep(duration_ns: u64) -> Gen {
    Box::new(Sleep {
        duration_ns,
        until_ns: None,
    })
}

// ---------------------------------------------------------------------------
// Combinators.

struct Limit {
    remaining: u64,
    inner: Gen,
}

impl Generator for Limit {
    fn next(&mut self, ctx: &Context) -> Poll {
        if self.remaining == 0 {
            return Poll::Done;
        }
        let p = self.inner.next(ctx);
        if matches!(p, Poll::Op(_)) {
            self.remaining -= 1;
        }
        p
    }
    fn update(&mut self, ctx: &Context, thread: Thread, c: &Op) {
        self.inner.update(ctx, thread, c)
    }
}

/// At most `n` ops from `inner`.
pub fn limit(n: u64, inner: Gen) -> Gen {
    Box::new(Limit {
        remaining: n,
        inner,
    })
}

struct TimeLimit {
    duration_ns: u64,
    deadline_ns: Option<u64>,
    inner: Gen,
}

impl Generator for TimeLimit {
    fn next(&mut self, ctx: &Context) -> Poll {
        let deadline = *self
            .deadline_ns
            .get_or_insert(ctx.time_ns + self.duration_ns);
        if ctx.time_ns >= deadline {
            return Poll::Done;
        }
        match self.inner.next(ctx) {
            Poll::Op(op) if op.time_ns >= deadline => Poll::Done,
            Poll::Pending { wake_ns } => Poll::Pending {
                wake_ns: Some(wake_ns.map_or(deadline, |w| w.min(deadline))),
            },
            p => p,
        }
    }
    fn update(&mut self, ctx: &Context, thread: Thread, c: &Op) {
        self.inner.update(ctx, thread, c)
    }
}

/// Ops from `inner` for `duration_ns` after the first request, then done.
pub fn time_limit(duration_ns: u64, inner: Gen) -> Gen {
    Box::new(TimeLimit {
        duration_ns,
        deadline_ns: None,
        inner,
    })
}

struct Stagger {
    mean_gap_ns: u64,
    next_ns: Option<u64>,
    rng: ChaCha8Rng,
    inner: Gen,
}

impl Generator for Stagger {
    fn next(&mut self, ctx: &Context) -> Poll {
        let at = *self.next_ns.get_or_insert(ctx.time_ns);
        match self.inner.next(ctx) {
            Poll::Op(mut op) => {
                op.time_ns = op.time_ns.max(at);
                // Uniform on [0, 2 * mean): the mean rate is the one asked for.
                let gap = if self.mean_gap_ns == 0 {
                    0
                } else {
                    self.rng.gen_range(0..2 * self.mean_gap_ns)
                };
                self.next_ns = Some(op.time_ns + gap);
                Poll::Op(op)
            }
            p => p,
        }
    }
    fn update(&mut self, ctx: &Context, thread: Thread, c: &Op) {
        self.inner.update(ctx, thread, c)
    }
}

/// Spaces ops by random gaps averaging `mean_gap_ns` across all threads (a target rate).
pub fn stagger(seed: u64, mean_gap_ns: u64, inner: Gen) -> Gen {
    Box::new(Stagger {
        mean_gap_ns,
        next_ns: None,
        rng: ChaCha8Rng::seed_from_u64(seed),
        inner,
    })
}

/// A target rate in ops per second across all threads.
pub fn rate(seed: u64, ops_per_sec: f64, inner: Gen) -> Gen {
    let gap = if ops_per_sec > 0.0 {
        (1e9 / ops_per_sec) as u64
    } else {
        0
    };
    stagger(seed, gap, inner)
}

struct Delay {
    gap_ns: u64,
    next_ns: Option<u64>,
    inner: Gen,
}

impl Generator for Delay {
    fn next(&mut self, ctx: &Context) -> Poll {
        let at = *self.next_ns.get_or_insert(ctx.time_ns);
        match self.inner.next(ctx) {
            Poll::Op(mut op) => {
                op.time_ns = op.time_ns.max(at);
                self.next_ns = Some(op.time_ns + self.gap_ns);
                Poll::Op(op)
            }
            p => p,
        }
    }
    fn update(&mut self, ctx: &Context, thread: Thread, c: &Op) {
        self.inner.update(ctx, thread, c)
    }
}

/// Exactly `gap_ns` between consecutive ops.
pub fn delay(gap_ns: u64, inner: Gen) -> Gen {
    Box::new(Delay {
        gap_ns,
        next_ns: None,
        inner,
    })
}

struct Phases {
    phases: std::collections::VecDeque<Gen>,
}

impl Generator for Phases {
    fn next(&mut self, ctx: &Context) -> Poll {
        while let Some(current) = self.phases.front_mut() {
            match current.next(ctx) {
                Poll::Done => {
                    // The next phase begins only when every op of this one has completed.
                    if !ctx.all_free() {
                        return Poll::PENDING;
                    }
                    self.phases.pop_front();
                }
                p => return p,
            }
        }
        Poll::Done
    }
    fn update(&mut self, ctx: &Context, thread: Thread, c: &Op) {
        if let Some(g) = self.phases.front_mut() {
            g.update(ctx, thread, c)
        }
    }
}

/// One generator after another, each waiting for the previous one's ops to complete.
pub fn phases(phases: Vec<Gen>) -> Gen {
    Box::new(Phases {
        phases: phases.into(),
    })
}

struct Concat {
    parts: std::collections::VecDeque<Gen>,
}

impl Generator for Concat {
    fn next(&mut self, ctx: &Context) -> Poll {
        while let Some(g) = self.parts.front_mut() {
            match g.next(ctx) {
                Poll::Done => {
                    self.parts.pop_front();
                }
                p => return p,
            }
        }
        Poll::Done
    }
    fn update(&mut self, ctx: &Context, thread: Thread, c: &Op) {
        if let Some(g) = self.parts.front_mut() {
            g.update(ctx, thread, c)
        }
    }
}

/// One generator after another, without waiting in between.
pub fn concat(parts: Vec<Gen>) -> Gen {
    Box::new(Concat {
        parts: parts.into(),
    })
}

struct Repeat<F> {
    make: F,
    remaining: Option<u64>,
    current: Option<Gen>,
}

impl<F: FnMut() -> Gen + Send> Generator for Repeat<F> {
    fn next(&mut self, ctx: &Context) -> Poll {
        // Bounded so a generator that is done at once cannot spin forever.
        for _ in 0..1024 {
            if self.current.is_none() {
                match &mut self.remaining {
                    Some(0) => return Poll::Done,
                    Some(n) => *n -= 1,
                    None => {}
                }
                self.current = Some((self.make)());
            }
            match self.current.as_mut().map(|g| g.next(ctx)) {
                Some(Poll::Done) => self.current = None,
                Some(p) => return p,
                None => return Poll::Done,
            }
        }
        Poll::PENDING
    }
    fn update(&mut self, ctx: &Context, thread: Thread, c: &Op) {
        if let Some(g) = &mut self.current {
            g.update(ctx, thread, c)
        }
    }
}

/// Run a fresh generator from `make` again each time the last one is done;
/// `times: None` repeats forever.
pub fn repeat(times: Option<u64>, make: impl FnMut() -> Gen + Send + 'static) -> Gen {
    Box::new(Repeat {
        make,
        remaining: times,
        current: None,
    })
}

struct Mix {
    gens: Vec<Gen>,
    rng: ChaCha8Rng,
}

impl Generator for Mix {
    fn next(&mut self, ctx: &Context) -> Poll {
        while !self.gens.is_empty() {
            let i = self.rng.gen_range(0..self.gens.len());
            match self.gens[i].next(ctx) {
                Poll::Done => {
                    self.gens.swap_remove(i);
                }
                p => return p,
            }
        }
        Poll::Done
    }
    fn update(&mut self, ctx: &Context, thread: Thread, c: &Op) {
        for g in &mut self.gens {
            g.update(ctx, thread, c)
        }
    }
}

/// Each op from a generator chosen at random; done when all are.
pub fn mix(seed: u64, gens: Vec<Gen>) -> Gen {
    Box::new(Mix {
        gens,
        rng: ChaCha8Rng::seed_from_u64(seed),
    })
}

struct Any {
    gens: Vec<Gen>,
    /// An op each child has committed to but that was not handed out yet,
    /// because another child's op was due sooner.
    held: Vec<Option<Invocation>>,
    done: Vec<bool>,
}

impl Generator for Any {
    fn next(&mut self, ctx: &Context) -> Poll {
        let mut wake: Option<u64> = None;
        for i in 0..self.gens.len() {
            if self.held[i].is_some() || self.done[i] {
                continue;
            }
            // Threads held for another child's op are not free for this one.
            let held: Vec<Thread> = self.held.iter().flatten().map(|op| op.thread).collect();
            let view = if held.is_empty() {
                ctx.clone()
            } else {
                ctx.restrict_free(|t| !held.contains(&t))
            };
            match self.gens[i].next(&view) {
                Poll::Op(op) => self.held[i] = Some(op),
                Poll::Done => self.done[i] = true,
                Poll::Pending { wake_ns } => {
                    if let Some(w) = wake_ns {
                        wake = Some(wake.map_or(w, |x| x.min(w)));
                    }
                }
            }
        }
        // The soonest op wins, as in Jepsen's `any`.
        let soonest = (0..self.held.len())
            .filter(|&i| self.held[i].is_some())
            .min_by_key(|&i| self.held[i].as_ref().map(|o| o.time_ns));
        if let Some(i) = soonest {
            return Poll::Op(self.held[i].take().expect("chosen among held ops"));
        }
        if self.done.iter().all(|d| *d) {
            Poll::Done
        } else {
            Poll::Pending { wake_ns: wake }
        }
    }
    fn update(&mut self, ctx: &Context, thread: Thread, c: &Op) {
        for g in &mut self.gens {
            g.update(ctx, thread, c)
        }
    }
}

/// Ops from whichever generator has one; done when all are.
pub fn any(gens: Vec<Gen>) -> Gen {
    let n = gens.len();
    Box::new(Any {
        gens,
        held: vec![None; n],
        done: vec![false; n],
    })
}

struct OnThreads<P> {
    keep: P,
    inner: Gen,
}

impl<P: Fn(Thread) -> bool + Send> Generator for OnThreads<P> {
    fn next(&mut self, ctx: &Context) -> Poll {
        self.inner.next(&ctx.restrict(&self.keep))
    }
    fn update(&mut self, ctx: &Context, thread: Thread, c: &Op) {
        if (self.keep)(thread) {
            self.inner.update(&ctx.restrict(&self.keep), thread, c)
        }
    }
}

/// `inner` sees only the threads `keep` accepts.
pub fn on_threads(keep: impl Fn(Thread) -> bool + Send + 'static, inner: Gen) -> Gen {
    Box::new(OnThreads { keep, inner })
}

/// `inner` runs on client threads only.
pub fn clients(inner: Gen) -> Gen {
    on_threads(|t| matches!(t, Thread::Client(_)), inner)
}

/// `inner` runs on the nemesis thread only.
pub fn nemesis(inner: Gen) -> Gen {
    on_threads(|t| t == Thread::Nemesis, inner)
}

/// Client ops and a nemesis schedule side by side.
pub fn clients_and_nemesis(client_gen: Gen, nemesis_gen: Gen) -> Gen {
    any(vec![clients(client_gen), nemesis(nemesis_gen)])
}

struct EachThread<F> {
    make: F,
    per_thread: std::collections::BTreeMap<Thread, Option<Gen>>,
}

impl<F: FnMut(Thread) -> Gen + Send> Generator for EachThread<F> {
    fn next(&mut self, ctx: &Context) -> Poll {
        let mut wake: Option<u64> = None;
        for &t in &ctx.threads {
            self.per_thread
                .entry(t)
                .or_insert_with(|| Some((self.make)(t)));
        }
        for &t in &ctx.free {
            let Some(Some(g)) = self.per_thread.get_mut(&t) else {
                continue;
            };
            let solo = Context {
                time_ns: ctx.time_ns,
                free: vec![t],
                threads: vec![t],
            };
            match g.next(&solo) {
                Poll::Op(op) => return Poll::Op(op),
                Poll::Done => {
                    self.per_thread.insert(t, None);
                }
                Poll::Pending { wake_ns } => {
                    if let Some(w) = wake_ns {
                        wake = Some(wake.map_or(w, |x| x.min(w)));
                    }
                }
            }
        }
        let all_done = ctx
            .threads
            .iter()
            .all(|t| matches!(self.per_thread.get(t), Some(None)));
        if all_done {
            Poll::Done
        } else {
            Poll::Pending { wake_ns: wake }
        }
    }
    fn update(&mut self, ctx: &Context, thread: Thread, c: &Op) {
        if let Some(Some(g)) = self.per_thread.get_mut(&thread) {
            let solo = Context {
                time_ns: ctx.time_ns,
                free: vec![thread],
                threads: vec![thread],
            };
            g.update(&solo, thread, c)
        }
    }
}

/// Every thread runs its own copy of a generator (e.g. final reads, one per client).
pub fn each_thread(make: impl FnMut(Thread) -> Gen + Send + 'static) -> Gen {
    Box::new(EachThread {
        make,
        per_thread: Default::default(),
    })
}

struct UntilOk {
    inner: Gen,
    in_flight: Vec<Thread>,
    done: bool,
}

impl Generator for UntilOk {
    fn next(&mut self, ctx: &Context) -> Poll {
        if self.done {
            return Poll::Done;
        }
        let p = self.inner.next(ctx);
        if let Poll::Op(op) = &p {
            self.in_flight.push(op.thread);
        }
        p
    }
    fn update(&mut self, ctx: &Context, thread: Thread, c: &Op) {
        if let Some(i) = self.in_flight.iter().position(|t| *t == thread) {
            self.in_flight.swap_remove(i);
            if c.is_ok() {
                self.done = true;
            }
        }
        self.inner.update(ctx, thread, c)
    }
}

/// Ops from `inner` until one of them completes ok.
pub fn until_ok(inner: Gen) -> Gen {
    Box::new(UntilOk {
        inner,
        in_flight: Vec::new(),
        done: false,
    })
}

struct FlipFlop {
    gens: [Gen; 2],
    turn: usize,
}

impl Generator for FlipFlop {
    fn next(&mut self, ctx: &Context) -> Poll {
        match self.gens[self.turn].next(ctx) {
            Poll::Op(op) => {
                self.turn ^= 1;
                Poll::Op(op)
            }
            p => p,
        }
    }
    fn update(&mut self, ctx: &Context, thread: Thread, c: &Op) {
        for g in &mut self.gens {
            g.update(ctx, thread, c)
        }
    }
}

/// Alternates between two generators, one op each; done when the one whose turn it is is done.
pub fn flip_flop(a: Gen, b: Gen) -> Gen {
    Box::new(FlipFlop {
        gens: [a, b],
        turn: 0,
    })
}

/// A nemesis schedule: `sleep(interval)`, start, `sleep(interval)`, stop, forever.
pub fn start_stop_cycle(interval_ns: u64, start: OpSpec, stop: OpSpec) -> Gen {
    repeat(None, move || {
        concat(vec![
            sleep(interval_ns),
            once(start.clone()),
            sleep(interval_ns),
            once(stop.clone()),
        ])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use splitbrain_history::{OpType, Process};

    const MS: u64 = 1_000_000;

    /// A tiny synchronous interpreter: every op completes ok `latency_ns` after invocation.
    fn run(
        mut gen: Gen,
        clients: usize,
        with_nemesis: bool,
        latency_ns: u64,
        max_ops: usize,
    ) -> Vec<(u64, Invocation)> {
        let mut threads: Vec<Thread> = (0..clients).map(Thread::Client).collect();
        if with_nemesis {
            threads.push(Thread::Nemesis);
        }
        let mut busy: Vec<(u64, Thread, Invocation)> = Vec::new();
        let mut now = 0u64;
        let mut out = Vec::new();
        while out.len() < max_ops {
            let free: Vec<Thread> = threads
                .iter()
                .copied()
                .filter(|t| busy.iter().all(|b| b.1 != *t))
                .collect();
            let ctx = Context::new(now, free, threads.clone());
            match gen.next(&ctx) {
                Poll::Op(op) => {
                    let at = op.time_ns.max(now);
                    now = at;
                    busy.push((at + latency_ns, op.thread, op.clone()));
                    out.push((at, op));
                }
                p => {
                    // Advance to the next completion or wake-up.
                    let next_done = busy.iter().map(|b| b.0).min();
                    let wake = match p {
                        Poll::Pending { wake_ns } => wake_ns,
                        _ => None,
                    };
                    let Some(t) = [next_done, wake].into_iter().flatten().min() else {
                        break;
                    };
                    if matches!(p, Poll::Done) && busy.is_empty() {
                        break;
                    }
                    now = now.max(t);
                    let (done, rest): (Vec<_>, Vec<_>) = busy.into_iter().partition(|b| b.0 <= now);
                    busy = rest;
                    for (_, thread, inv) in done {
                        let op = Op::new(Process::Client(0), OpType::Ok, &inv.f, inv.value.clone());
                        let free: Vec<Thread> = threads
                            .iter()
                            .copied()
                            .filter(|t| busy.iter().all(|b| b.1 != *t))
                            .collect();
                        gen.update(&Context::new(now, free, threads.clone()), thread, &op);
                    }
                }
            }
        }
        out
    }

    fn reads(seed: u64) -> Gen {
        from_fn(seed, |rng| {
            if rng.gen_bool(0.5) {
                OpSpec::new("read", Value::Nil)
            } else {
                OpSpec::new("write", rng.gen_range(0..5))
            }
        })
    }

    #[test]
    fn same_seed_same_ops() {
        let a: Vec<_> = run(limit(200, reads(7)), 5, false, MS, 1000)
            .into_iter()
            .map(|(_, i)| (i.f, i.value))
            .collect();
        let b: Vec<_> = run(limit(200, reads(7)), 3, false, 2 * MS, 1000)
            .into_iter()
            .map(|(_, i)| (i.f, i.value))
            .collect();
        let c: Vec<_> = run(limit(200, reads(8)), 5, false, MS, 1000)
            .into_iter()
            .map(|(_, i)| (i.f, i.value))
            .collect();
        assert_eq!(a.len(), 200);
        assert_eq!(a, b, "thread count and timing do not change the sequence");
        assert_ne!(a, c);
    }

    #[test]
    fn limit_and_time_limit() {
        assert_eq!(run(limit(10, reads(1)), 3, false, MS, 100).len(), 10);
        // 3 threads, 1 ms per op, 10 ms: about 30 ops, never past the limit.
        let ops = run(time_limit(10 * MS, reads(1)), 3, false, MS, 1000);
        assert!(ops.iter().all(|(t, _)| *t < 10 * MS));
        assert!((27..=33).contains(&ops.len()), "{}", ops.len());
    }

    #[test]
    fn stagger_sets_the_rate() {
        // 1000 ops/s target for one second with plenty of idle threads.
        let ops = run(
            time_limit(1_000 * MS, rate(3, 1000.0, reads(2))),
            10,
            false,
            MS,
            10_000,
        );
        assert!((900..=1100).contains(&ops.len()), "{}", ops.len());
        let d = run(limit(5, delay(10 * MS, reads(2))), 10, false, MS, 100);
        let times: Vec<u64> = d.iter().map(|(t, _)| *t).collect();
        assert_eq!(times, vec![0, 10 * MS, 20 * MS, 30 * MS, 40 * MS]);
    }

    #[test]
    fn phases_wait_for_completion() {
        let g = phases(vec![
            limit(3, reads(1)),
            once(OpSpec::new("final", Value::Nil)),
        ]);
        let ops = run(g, 3, false, 5 * MS, 100);
        assert_eq!(ops.len(), 4);
        assert_eq!(ops[3].1.f, "final");
        assert!(
            ops[3].0 >= 5 * MS,
            "the final op waits for the first phase: {}",
            ops[3].0
        );
    }

    #[test]
    fn clients_and_nemesis_are_separate() {
        let nem = start_stop_cycle(
            10 * MS,
            OpSpec::new("start-partition", "majority"),
            OpSpec::new("stop-partition", Value::Nil),
        );
        let g = time_limit(50 * MS, clients_and_nemesis(reads(1), nem));
        let ops = run(g, 2, true, MS, 10_000);
        let nemesis: Vec<_> = ops
            .iter()
            .filter(|(_, i)| i.thread == Thread::Nemesis)
            .collect();
        assert!(nemesis.iter().all(|(_, i)| i.f.contains("partition")));
        assert!(ops
            .iter()
            .filter(|(_, i)| i.thread != Thread::Nemesis)
            .all(|(_, i)| !i.f.contains("partition")));
        let starts: Vec<u64> = nemesis.iter().map(|(t, _)| *t).collect();
        // A sleep counts from when the schedule reaches it, not from the previous op's completion.
        assert_eq!(starts, vec![10 * MS, 20 * MS, 30 * MS, 40 * MS]);
    }

    #[test]
    fn each_thread_until_ok_flip_flop_mix() {
        let g = each_thread(|_| once(OpSpec::new("final-read", Value::Nil)));
        let ops = run(g, 4, false, MS, 100);
        let mut threads: Vec<_> = ops.iter().map(|(_, i)| i.thread).collect();
        threads.sort();
        assert_eq!(threads, (0..4).map(Thread::Client).collect::<Vec<_>>());

        // Every op completes ok, so until_ok stops after the first completes.
        let ops = run(until_ok(reads(1)), 1, false, MS, 100);
        assert_eq!(ops.len(), 1);

        let g = limit(
            4,
            flip_flop(
                from_fn(0, |_| OpSpec::new("a", Value::Nil)),
                from_fn(0, |_| OpSpec::new("b", Value::Nil)),
            ),
        );
        let fs: Vec<_> = run(g, 1, false, MS, 100)
            .into_iter()
            .map(|(_, i)| i.f.to_string())
            .collect();
        assert_eq!(fs, ["a", "b", "a", "b"]);

        let g = mix(
            5,
            vec![
                limit(10, from_fn(0, |_| OpSpec::new("a", Value::Nil))),
                limit(10, from_fn(0, |_| OpSpec::new("b", Value::Nil))),
            ],
        );
        let fs: Vec<_> = run(g, 2, false, MS, 100)
            .into_iter()
            .map(|(_, i)| i.f.to_string())
            .collect();
        assert_eq!(fs.len(), 20);
        assert_eq!(fs.iter().filter(|f| *f == "a").count(), 10);
        assert_ne!(
            fs[..10].iter().filter(|f| *f == "a").count(),
            10,
            "mixed, not one after the other"
        );
    }

    #[test]
    fn repeat_runs_fresh_copies() {
        let g = repeat(Some(3), || {
            limit(2, from_fn(1, |_| OpSpec::new("x", Value::Nil)))
        });
        assert_eq!(run(g, 2, false, MS, 100).len(), 6);
    }
}
