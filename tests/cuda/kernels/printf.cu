// Device printf with ints, floats and strings; reference::printf_lines gives the expected
// output for a launch of (1, threads).

extern "C" __global__ void hello_printf(int a, float b, long long c)
{
    const char *word = (threadIdx.x & 1) ? "odd" : "even";
    printf("thread %u: a=%d b=%.3f c=%lld %s\n", threadIdx.x, a + (int)threadIdx.x, b * threadIdx.x, c, word);
    if (threadIdx.x == 0)
        printf("%s|%5d|%-4x|%c|%e\n", "fmt", -42, 255u, 'Z', 1.5e-3);
}
