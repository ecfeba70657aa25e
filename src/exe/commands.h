// The `sluice` command line: validate, check, replay, demo, version.
//
//   sluice validate PATH...                 load rule files as one snapshot, report every error
//   sluice check --config PATH ...          decide one request (or --times N of them) now
//   sluice replay --config PATH --trace F   decide a JSON-lines trace on a manual clock
//   sluice demo [--config examples]         the four algorithms side by side on the same hits
//   sluice version                          print the version
//
// Exit codes: 0 success (a denied request is still a success), 1 bad rules, bad trace or bad
// argument values, 2 unknown commands or flags (the command line itself could not be parsed).
#pragma once

namespace sluice::cli {

// main() parses argv and runs one command; returns the process exit code. Writes results to
// stdout and errors to stderr.
int main(int argc, char** argv);

}  // namespace sluice::cli
