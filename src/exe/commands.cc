#include "exe/commands.h"

#include <iostream>

namespace sluice::cli {

int main(int, char**) {
  std::cout << "sluice " << SLUICE_VERSION << "\n";
  return 0;
}

}  // namespace sluice::cli
