package android.graphics;

public class Paint {
    public enum Style { FILL, STROKE, FILL_AND_STROKE }
    public Paint() {}
    public int getColor() { throw new RuntimeException("stub"); }
    public void setColor(int color) {}
    public float getStrokeWidth() { throw new RuntimeException("stub"); }
    public void setStrokeWidth(float width) {}
    public Style getStyle() { throw new RuntimeException("stub"); }
    public void setStyle(Style style) {}
    public final boolean isAntiAlias() { throw new RuntimeException("stub"); }
    public void setAntiAlias(boolean aa) {}
}
