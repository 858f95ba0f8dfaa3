//! Time the image twin's training step (forward of both towers, contrastive loss, backward,
//! Adam) on random pixels, the inner loop of `twindex train image` without data loading:
//! a quick way to profile the CNN ops (`perf record target/release/examples/train_step`).
//!
//! ```text
//! cargo run --release --example train_step -- --arch lenet --batch 128 --steps 200 --threads 1
//! ```
//!
//! Prints milliseconds of wall time and of process CPU per step and pairs per CPU-second.

use candle_core::{Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use twindex::model::{Arch, ImageModel, ImageModelConfig};
use twindex::timing::Stopwatch;
use twindex::train::loss;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mut arch, mut batch, mut steps, mut threads) = (Arch::Lenet, 128usize, 200usize, 1usize);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--arch" => {
                arch = <Arch as clap::ValueEnum>::from_str(&v, true)
                    .map_err(|e| format!("--arch {v}: {e}"))?
            }
            "--batch" => batch = v.parse()?,
            "--steps" => steps = v.parse()?,
            "--threads" => threads = v.parse()?,
            _ => return Err(format!("unknown argument {flag}").into()),
        }
    }
    // candle's own ops are tiny here (the CNN layers are twindex's, on rayon): one thread, as
    // `twindex train image` does.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    twindex::train::keep_freed_memory();
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()?;
    let model = ImageModel::new_trainable(ImageModelConfig::new(arch, 28, 28, 1), 1)?;
    let vars = model.varmap.as_ref().expect("trainable").all_vars();
    let mut opt = AdamW::new(
        vars,
        ParamsAdamW {
            lr: 1e-3,
            weight_decay: 0.0,
            eps: 1e-7,
            ..Default::default()
        },
    )?;
    // A few fixed random batches (xorshift), cycled.
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let mut rnd = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32
    };
    let batches: Vec<(Tensor, Tensor)> = (0..4)
        .map(|_| {
            let x: Vec<f32> = (0..2 * batch * 784).map(|_| rnd()).collect();
            let y: Vec<f32> = (0..batch).map(|i| (i % 2) as f32).collect();
            Ok((
                Tensor::from_vec(x, (2 * batch, 28, 28, 1), &Device::Cpu)?,
                Tensor::from_vec(y, batch, &Device::Cpu)?,
            ))
        })
        .collect::<candle_core::Result<_>>()?;
    let mut step = |i: usize| -> candle_core::Result<f32> {
        let (x, y) = &batches[i % batches.len()];
        let e = candle_core::Module::forward(&model.encoder, x)?;
        let d = loss::euclidean_distance(&e.narrow(0, 0, batch)?, &e.narrow(0, batch, batch)?)?;
        let l = loss::contrastive(&d, y, 1.0)?;
        opt.backward_step(&l)?;
        l.to_scalar::<f32>()
    };
    for i in 0..10 {
        step(i)?;
    }
    let sw = Stopwatch::start();
    for i in 0..steps {
        step(i)?;
    }
    let (wall, cpu) = (sw.wall(), sw.cpu());
    println!(
        "{} batch {batch} x2, {threads} thread(s), {steps} steps: {:.2} ms wall, {:.2} ms CPU per step; {:.0} pairs/s, {:.0} pairs per CPU-s",
        arch.name(),
        1e3 * wall / steps as f64,
        1e3 * cpu / steps as f64,
        (steps * batch) as f64 / wall,
        (steps * batch) as f64 / cpu
    );
    Ok(())
}
