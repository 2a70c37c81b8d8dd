fn main() {
    std::process::exit(netpath::cli::main());
}
