package org.tensorflow.lite.nnapi;

public class NnApiDelegate implements org.tensorflow.lite.Delegate, AutoCloseable {
    public NnApiDelegate() {}
    public long getNativeHandle() { return 0; }
    public void close() {}
}
