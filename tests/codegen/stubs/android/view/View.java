package android.view;

public class View {
    public View(android.content.Context context, android.util.AttributeSet attrs) {}
    public final int getWidth() { throw new RuntimeException("stub"); }
    public final int getHeight() { throw new RuntimeException("stub"); }
    public void invalidate() {}
    protected void onDraw(android.graphics.Canvas canvas) {}
}
