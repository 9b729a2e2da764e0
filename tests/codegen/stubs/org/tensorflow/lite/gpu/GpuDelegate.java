package org.tensorflow.lite.gpu;

public class GpuDelegate implements org.tensorflow.lite.Delegate, java.io.Closeable {
    public GpuDelegate() {}
    public long getNativeHandle() { return 0; }
    public void close() {}
}
