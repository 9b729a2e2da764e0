package org.tensorflow.lite;

public final class Interpreter implements AutoCloseable {
    public Interpreter(java.nio.ByteBuffer byteBuffer, Options options) { throw new RuntimeException("stub"); }
    public void run(Object input, Object output) { throw new RuntimeException("stub"); }
    public void runSignature(java.util.Map<String, Object> inputs, java.util.Map<String, Object> outputs, String signatureKey) {
        throw new RuntimeException("stub");
    }
    public void close() {}

    public static class Options {
        public Options() {}
        public Options setNumThreads(int numThreads) { return this; }
        public Options setUseXNNPACK(boolean useXNNPACK) { return this; }
        public Options setUseNNAPI(boolean useNNAPI) { return this; }
        public Options addDelegate(Delegate delegate) { return this; }
    }
}
