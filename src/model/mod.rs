//! Encoders as candle modules: image CNNs (with fast custom ops) and their on-disk form, and
//! the sentence-transformers text encoder (BERT/MiniLM); ensembles of image encoders.

// Before the modules, so that they can use `simd_fn!`.
/// Whether the CPU has AVX2 and FMA ([`crate::cpu`]).
#[inline]
pub(crate) fn has_avx2_fma() -> bool {
    crate::cpu::has_avx2_fma()
}

/// Define a function whose body is compiled twice: for AVX2+FMA (chosen at run time when the
/// CPU has them; LLVM then vectorises the plain loops 8 floats wide) and for the baseline target
/// (SSE2 on x86-64). The crate is built for the baseline, so this is how the hot loops of the
/// image ops and the text trainer get the wide registers without `-C target-cpu`.
macro_rules! simd_fn {
    ($(#[$m:meta])* fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn wide($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                if $crate::model::has_avx2_fma() {
                    // SAFETY: the CPU supports AVX2 and FMA (checked at run time just above).
                    return unsafe { wide($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

pub mod bert;
pub mod bert_linear;
pub mod cnn;
pub mod cnn_ops;
pub mod dlib;
pub mod dlib_detect;
pub mod dlib_faces;
pub mod dlib_import;
pub mod encoder_dir;
pub mod ensemble;
pub mod fastbert;
pub mod gemm;
pub mod gradbert;
pub mod image;
pub mod pen;
pub mod resnet;
pub mod seeded;
pub mod sequence;
pub mod text;

pub use bert_linear::LinearPrecision;
pub use cnn::{Arch, ImageEncoder};
pub use ensemble::{Ensemble, EnsembleBy, EnsembleConfig, MemberConfig};
pub use fastbert::{FastBert, TextBackend};
pub use image::{ImageModel, ImageModelConfig, Preprocess, TrainingRecord};
pub use text::{TextEncoder, TextModelParts};

impl From<candle_core::Error> for crate::error::Error {
    fn from(e: candle_core::Error) -> Self {
        crate::error::Error::Tensor(e.to_string())
    }
}
