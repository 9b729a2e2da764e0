package android.graphics;

public class Color {
    public static final int GREEN = 0xFF00FF00;
    public static final int YELLOW = 0xFFFFFF00;
    public static final int WHITE = 0xFFFFFFFF;
}
