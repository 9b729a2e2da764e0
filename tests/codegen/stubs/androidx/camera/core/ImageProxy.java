package androidx.camera.core;

public interface ImageProxy extends AutoCloseable {
    void close();
    int getWidth();
    int getHeight();
    ImageInfo getImageInfo();
    android.graphics.Bitmap toBitmap();
}
