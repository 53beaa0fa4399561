//! Profiling driver: runs the detector over 60 s of DTMF plus speech-like noise, for
//! `valgrind --tool=callgrind`. Not part of any test.
use tonewall::dtmf::*;
use tonewall::signal::*;
fn main() {
    let mut rng = Rng::new(11);
    let mut x = vec![0.0; 8000 * 60];
    add_white_noise(&mut x, power_for_dbm0(-30.0), &mut rng);
    let keys = "123A456B789C*0#D";
    for (i, c) in keys.chars().cycle().take(300).enumerate() {
        add_dtmf(
            &mut x,
            8000,
            800 + i * 1500,
            480,
            Digit::from_char(c).unwrap(),
            ToneSpec::level(-10.0),
            &mut rng,
        );
    }
    let x = to_i16(&x);
    let mut det = Detector::new(&DetectorConfig::default(), &MaskConfig::default(), false);
    let mut n = 0;
    for f in x.chunks(160) {
        det.process(f, &mut |_| n += 1);
    }
    println!("{n}");
}
