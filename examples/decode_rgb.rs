//! Write every photo under a folder as the RGB pixels twindex decodes (PNG, lossless), so that
//! dlib's reference (`benches/peers/dlib_detect_reference.py --decoded DIR`) runs on the very
//! pixels twindex sees: JPEG decoders differ in the last bit of some pixels (twindex's
//! zune-jpeg and PIL's libjpeg-turbo do), and dlib's landmark trees compare single pixels.
//!
//! ```text
//! cargo run --release --example decode_rgb -- ../shared/corpora/faces-photos target/faces-decoded
//! ```

use std::path::Path;
use std::process::ExitCode;

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else if matches!(
            p.extension()
                .and_then(|x| x.to_str())
                .map(|x| x.to_ascii_lowercase())
                .as_deref(),
            Some("jpg" | "jpeg" | "png")
        ) {
            out.push(p);
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let [src, dst] = a.as_slice() else {
        eprintln!("usage: decode_rgb PHOTOS_DIR OUT_DIR");
        return ExitCode::FAILURE;
    };
    let (src, dst) = (Path::new(src), Path::new(dst));
    let mut files = Vec::new();
    if let Err(e) = walk(src, &mut files) {
        eprintln!("{}: {e}", src.display());
        return ExitCode::FAILURE;
    }
    for p in files {
        let rel = p.strip_prefix(src).expect("under src");
        let out = dst.join(format!("{}.png", rel.display()));
        let bytes = std::fs::read(&p).expect("readable photo");
        match twindex::corpus::image_file::decode_rgb(&bytes, &p) {
            Ok(img) => {
                std::fs::create_dir_all(out.parent().expect("a parent")).expect("out dir");
                img.save(&out).expect("PNG written");
            }
            Err(e) => eprintln!("{e}"),
        }
    }
    ExitCode::SUCCESS
}
