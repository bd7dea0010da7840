// placeholder, replaced by the benchmark program
int main() { return 0; }
