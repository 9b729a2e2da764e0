package android.content.res;

public final class AssetManager {
    public AssetFileDescriptor openFd(String fileName) throws java.io.IOException { throw new RuntimeException("stub"); }
}
