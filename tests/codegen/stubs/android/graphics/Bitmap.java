package android.graphics;

public final class Bitmap {
    public enum Config { ARGB_8888 }
    public int getWidth() { throw new RuntimeException("stub"); }
    public int getHeight() { throw new RuntimeException("stub"); }
    public void getPixels(int[] pixels, int offset, int stride, int x, int y, int width, int height) { throw new RuntimeException("stub"); }
    public static Bitmap createBitmap(Bitmap source, int x, int y, int width, int height, Matrix m, boolean filter) { throw new RuntimeException("stub"); }
}
