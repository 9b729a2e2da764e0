package androidx.camera.view;

public class PreviewView extends android.view.View {
    public PreviewView(android.content.Context context, android.util.AttributeSet attrs) { super(context, attrs); }
    public androidx.camera.core.Preview.SurfaceProvider getSurfaceProvider() { throw new RuntimeException("stub"); }
}
