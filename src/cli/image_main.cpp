// Placeholder: being written (hutch-image: pull, load, save, login, logout).
#include <cstdio>
int main() {
    std::fprintf(stderr, "hutch: image transfer is not built yet\n");
    return 125;
}
