/* ksefd: placeholder main, replaced by the process module. */
int main(void) { return 0; }
