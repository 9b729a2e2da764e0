package android.app;

public class Activity extends android.content.Context {
    public android.content.res.AssetManager getAssets() { throw new RuntimeException("stub"); }
    public java.io.File getCacheDir() { throw new RuntimeException("stub"); }
    protected void onCreate(android.os.Bundle savedInstanceState) {}
    protected void onDestroy() {}
    public void setContentView(int layoutResID) {}
    public <T extends android.view.View> T findViewById(int id) { throw new RuntimeException("stub"); }
    public final void runOnUiThread(Runnable action) {}
}
