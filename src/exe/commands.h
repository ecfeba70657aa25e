// The `sluice` command line: validate, check, replay, demo, version.
#pragma once

namespace sluice::cli {

// main() parses argv and runs one command; returns the process exit code.
int main(int argc, char** argv);

}  // namespace sluice::cli
