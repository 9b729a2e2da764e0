package android.graphics;

public class Matrix {
    public Matrix() {}
    public boolean postRotate(float degrees) { return true; }
    public boolean postScale(float sx, float sy) { return true; }
}
