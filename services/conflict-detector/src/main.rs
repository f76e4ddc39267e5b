//! `tillstream-conflict-detector`: not wired yet (the pure core is in place).

fn main() {
    eprintln!("tillstream-conflict-detector: the service is not wired yet");
    std::process::exit(2);
}
