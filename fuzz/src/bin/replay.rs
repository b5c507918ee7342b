//! Runs one target over files or directories of inputs, without AFL: to reproduce a crash
//! (`replay engine fuzz/out/engine/default/crashes/id:...`) or to check a corpus.
use std::path::Path;

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().expect("usage: replay TARGET PATH...");
    let target = pgheal::fuzzing::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no target {name}"))
        .1;
    let mut n = 0;
    for arg in args {
        let p = Path::new(&arg);
        let files: Vec<_> = if p.is_dir() {
            let mut v: Vec<_> = std::fs::read_dir(p)
                .expect("read dir")
                .map(|e| e.expect("entry").path())
                .filter(|p| p.is_file())
                .collect();
            v.sort();
            v
        } else {
            vec![p.to_path_buf()]
        };
        for f in files {
            eprintln!("{}", f.display());
            target(&std::fs::read(&f).expect("read input"));
            n += 1;
        }
    }
    eprintln!("{n} inputs ran");
}
