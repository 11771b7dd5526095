// main.cpp: the smoe command-line tool (subcommands are added as they are built).
#include <cstdio>
int main() {
  std::puts("smoe");
  return 0;
}
